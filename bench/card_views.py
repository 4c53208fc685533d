"""The benchmarks' feature views: five card views of ten features each (50 in all), what
a card-fraud model asks for. `bench/online.py` serves them, `bench/offline.py` builds
training sets of them, so both measure the same features."""

from __future__ import annotations

from featurestore.features.definitions import FeatureView


def views(source: str) -> list[FeatureView]:
    """The five views, reading the contract registered under ``source``."""
    recent, days = ["10m", "1h"], ["24h/1h", "7d/1h"]
    specs: dict[str, list[tuple[str, list[str], list[str]]]] = {
        "card_spend": [("amount", ["count", "sum", "mean", "max", "std"], recent)],
        "card_spend_daily": [("amount", ["count", "sum", "mean", "max", "std"], days)],
        "card_merchants": [
            ("merchant_id", ["distinct"], ["10m", "1h", *days]),
            ("merchant_category", ["distinct"], ["1h", *days]),
            ("merchant_id", ["last"], ["24h/1h"]),
            ("merchant_category", ["last"], ["24h/1h"]),
            ("merchant_id", ["count"], ["10m"]),
        ],
        "card_geo": [
            ("country", ["last", "distinct"], ["1h", "24h/1h"]),
            ("country", ["distinct"], ["7d/1h"]),
            ("channel", ["last", "distinct"], ["1h", "24h/1h"]),
            ("currency", ["distinct"], ["24h/1h"]),
        ],
        "card_velocity": [
            ("payment_id", ["count"], ["5m/1m", "10m", "1h", *days]),
            ("amount", ["min", "max"], ["10m", "24h/1h"]),
            ("amount", ["last"], ["1h"]),
        ],
    }
    out = []
    for name, aggs in specs.items():
        aggregations = [{"column": c, "functions": f, "windows": w} for c, f, w in aggs]
        view = FeatureView.model_validate(
            {"name": name, "source": source, "entity": "card", "aggregations": aggregations,
             "owner": "fraud-team@example.com"}
        )  # fmt: skip
        assert len(view.features) == 10, (name, len(view.features))
        out.append(view)
    return out

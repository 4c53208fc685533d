"""Feature view definitions: windows, names, retention, and clear errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from featurestore.errors import ConfigError
from featurestore.features.definitions import FeatureView, default_tile, parse_ref, parse_window
from featurestore.stream.definition import load_definition

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000


def view(**overrides: object) -> FeatureView:
    raw: dict[str, object] = {
        "name": "card_spend",
        "source": "payments-value",
        "entity": "card",
        "owner": "team@example.com",
        "aggregations": [
            {"column": "amount", "functions": ["sum", "count"], "windows": ["10m", "7d/1h"]},
            {"column": "merchant_id", "functions": ["distinct"], "windows": ["24h"]},
        ],
    }
    return FeatureView.model_validate(raw | overrides)


def test_windows_and_default_tiles() -> None:
    assert parse_window("7d/1h").tile_ms == HOUR
    assert parse_window("10m").tile_ms == MINUTE
    assert parse_window("24h").tile_ms == HOUR
    assert parse_window("7d").tile_ms == HOUR
    assert default_tile(30_000) == 1_000


def test_features_values_and_retention() -> None:
    v = view(allowed_lateness="2h")
    assert [f.name for f in v.features] == [
        "amount_sum_10m", "amount_count_10m", "amount_sum_7d", "amount_count_7d",
        "merchant_id_distinct_24h",
    ]  # fmt: skip
    assert v.values["merchant_id"].distinct
    assert not v.values["amount"].distinct
    assert v.tiles_ms == [MINUTE, HOUR]
    assert v.retention_ms == 7 * DAY + 2 * HOUR
    assert v.retention_for(MINUTE) == 10 * MINUTE + 2 * HOUR
    assert v.ttl_ms == v.retention_ms


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"aggregations": [{"column": "a", "functions": ["sum"], "windows": ["1h/7m"]}]},
         "does not divide"),
        ({"aggregations": [{"column": "a", "functions": ["median"], "windows": ["1h"]}]},
         "functions"),
        ({"ttl": "1h"}, "shorter than the retention"),
        ({"allowed_lateness": "soon"}, "not a duration"),
        ({"aggregations": [{"column": "a", "functions": ["sum"], "windows": ["1h", "1h"]}]},
         "declared twice"),
    ],
)  # fmt: skip
def test_bad_views_say_what_is_wrong(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        view(**overrides)


def test_columns_checked_against_the_contract() -> None:
    v = view()
    v.check_columns({"amount": True, "merchant_id": False})
    with pytest.raises(ConfigError, match="not a field"):
        v.check_columns({"amount": True})
    with pytest.raises(ConfigError, match="needs a numeric field"):
        v.check_columns({"amount": False, "merchant_id": False})


def test_feature_refs() -> None:
    assert parse_ref("card_spend:amount_sum_1h") == ("card_spend", None, "amount_sum_1h")
    assert parse_ref("card_spend@2:amount_sum_1h") == ("card_spend", 2, "amount_sum_1h")
    with pytest.raises(ConfigError, match="view:feature"):
        parse_ref("amount_sum_1h")
    with pytest.raises(ConfigError, match="has no feature"):
        view().feature("amount_sum_2h")


def test_example_consumer_declares_views() -> None:
    consumer = load_definition("consumers/payments.toml")
    assert {v.name for v in consumer.views} == {"card_spend", "card_places"}
    assert consumer.join_keys == {"card": ["card_id"]}

"""Resolving feature lists and services against definitions, once; entity rows in any
form; statuses and conversions of a lookup's answer (pure, no Redis)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from featurestore.errors import ConfigError, NotFoundError
from featurestore.features.definitions import FeatureService, FeatureView
from featurestore.online.layout import entity_parts, row_count
from featurestore.online.store import Lookup
from featurestore.serving import EXPIRED, NOT_FOUND, PRESENT, Catalog, OnlineFeatures, entity_frame
from featurestore.serving.client import entity_rows


def view(name: str, version: int = 1, column: str = "amount") -> FeatureView:
    return FeatureView.model_validate(
        {"name": name, "version": version, "source": "s", "entity": "card", "owner": "o",
         "aggregations": [{"column": column, "functions": ["count", "sum"],
                           "windows": ["1h/5m", "24h/1h"]}]}
    )  # fmt: skip


SPEND, SPEND2, PLACES = view("spend"), view("spend", 2), view("places", column="merchant")
SERVICE = FeatureService(name="fraud", features=["spend:amount_sum_1h", "places:merchant_count_1h"])


@pytest.fixture
def catalog() -> Catalog:
    return Catalog([SPEND, SPEND2, PLACES], {"card": ["card_id"]}, [SERVICE])


def test_refs_resolve_grouped_by_view_in_request_order(catalog: Catalog) -> None:
    resolved = catalog.resolve(
        ["places:merchant_count_1h", "spend:amount_sum_24h", "places:merchant_sum_1h",
         "spend@1:amount_count_1h"]
    )  # fmt: skip
    assert [(v.name, v.version, f) for v, f in resolved.requests] == [
        ("places", 1, ("merchant_count_1h", "merchant_sum_1h")),
        ("spend", 2, ("amount_sum_24h",)),  # the served version is the highest
        ("spend", 1, ("amount_count_1h",)),
    ]
    assert [o.name for o in resolved.outputs] == [
        "merchant_count_1h", "amount_sum_24h", "merchant_sum_1h", "amount_count_1h"
    ]  # fmt: skip
    assert [o.request for o in resolved.outputs] == [0, 1, 0, 2]
    assert resolved.join_keys == ("card_id",)
    again = ["places:merchant_count_1h", "spend:amount_sum_24h", "places:merchant_sum_1h",
             "spend@1:amount_count_1h"]  # fmt: skip
    assert catalog.resolve(again) is resolved


def test_services_and_full_names(catalog: Catalog) -> None:
    resolved = catalog.resolve("fraud", full_names=True)
    assert resolved.service == "fraud"
    assert [o.name for o in resolved.outputs] == [
        "spend__amount_sum_1h",
        "places__merchant_count_1h",
    ]
    assert [o.ref for o in resolved.outputs] == SERVICE.features
    with pytest.raises(ConfigError, match="asked for twice; ask for full feature names"):
        catalog.resolve(["spend:amount_sum_1h", "spend@1:amount_sum_1h"])
    both = catalog.resolve(["spend:amount_sum_1h", "spend@1:amount_sum_1h"], full_names=True)
    assert [o.name for o in both.outputs] == ["spend__amount_sum_1h", "spend_v1__amount_sum_1h"]


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (["nope:amount_sum_1h"], "unknown feature view 'nope'; views: places, spend"),
        (["spend:amount_max_1h"], "has no feature 'amount_max_1h'; it has amount_count_1h"),
        (["spend@3:amount_sum_1h"], "has no version 3; versions: 1, 2"),
        (["spend"], "not a feature reference"),
        (["spend:amount sum"], "not a feature reference"),
        ("ghost", "unknown feature service 'ghost'; services: fraud"),
    ],
)
def test_unknown_names_are_named(catalog: Catalog, features: list[str] | str, message: str) -> None:
    with pytest.raises(NotFoundError, match=message.replace("(", r"\(")):
        catalog.resolve(features)


def test_a_broken_service_fails_when_the_catalog_is_built() -> None:
    broken = FeatureService(name="bad", features=["spend:amount_max_1h"])
    with pytest.raises(ConfigError, match=r"feature service 'bad': .* no feature 'amount_max_1h'"):
        Catalog([SPEND], {"card": ["card_id"]}, [broken])
    with pytest.raises(ValueError, match="not a feature reference"):
        FeatureService(name="bad", features=["spend"])


def test_load_reads_views_services_and_the_online_sink(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(
        'name = "a"\ntopics = ["t"]\nsubject = "s"\n[sinks.online]\nprefix = "fx"\n'
        '[[entities]]\nname = "card"\njoin_keys = ["card_id"]\n'
        '[[views]]\nname = "spend"\nsource = "s"\nentity = "card"\nowner = "o"\n'
        '[[views.aggregations]]\ncolumn = "amount"\nfunctions = ["sum"]\nwindows = ["1h"]\n'
        '[[feature_services]]\nname = "m"\nfeatures = ["spend:amount_sum_1h"]\n'
    )
    catalog = Catalog.load(tmp_path)
    assert catalog.prefix == "fx"
    assert list(catalog.views) == ["spend"]
    assert catalog.resolve("m").outputs[0].name == "amount_sum_1h"
    (tmp_path / "b.toml").write_text(
        'name = "b"\ntopics = ["u"]\nsubject = "s2"\n[sinks.online]\nprefix = "other"\n'
    )
    with pytest.raises(ConfigError, match="different online stores"):
        Catalog.load(tmp_path)


@pytest.mark.parametrize(
    "rows",
    [
        [{"card_id": "a"}, {"card_id": "b"}],
        {"card_id": ["a", "b"]},
        pl.DataFrame({"card_id": ["a", "b"]}),
        pd.DataFrame({"card_id": ["a", "b"]}),
        pa.table({"card_id": ["a", "b"]}),
    ],
)
def test_entity_rows_in_any_form(rows: object) -> None:
    assert entity_frame(rows, ["card_id"])["card_id"].to_list() == ["a", "b"]


def test_entity_rows_with_wrong_keys_are_refused() -> None:
    assert entity_frame({"card_id": "a"}, ["card_id"]).height == 1
    with pytest.raises(
        ConfigError, match=r"missing join keys \['card_id'\]; unknown columns \['card'\]"
    ):
        entity_frame({"card": ["a"]}, ["card_id"])
    with pytest.raises(ConfigError, match="cannot read entity rows from a int"):
        entity_frame(42, ["card_id"])
    with pytest.raises(ConfigError, match="mappings"):
        entity_frame(["a", "b"], ["card_id"])


@pytest.mark.parametrize(
    ("rows", "plain"),
    [
        ([{"card_id": "a"}, {"card_id": None}, {"card_id": "é"}], True),
        ({"card_id": [1, None, -(2**63)]}, True),
        ({"a": ["x", "y", None], "b": [1, None, 3]}, True),
        ({"card_id": "a"}, True),
        ({"card_id": [True, False]}, False),
        ({"card_id": [1.5, None]}, False),
        ({"card_id": [2**64, 1]}, False),  # past 64 bits: a frame of text
        ({"card_id": ["a", 1]}, False),  # mixed: a frame of text
    ],
)
def test_entity_rows_read_the_keys_a_frame_reads(rows: Any, plain: bool) -> None:
    """`entity_rows` skips the frame for plain text or integer keys, and the store reads
    the same entity keys from it as from `entity_frame`'s frame."""
    names = list(rows[0]) if isinstance(rows, list) else list(rows)
    fast, frame = entity_rows(rows, names), entity_frame(rows, names)
    assert isinstance(fast, dict) == plain
    assert entity_parts(fast, names) == entity_parts(frame, names)
    assert row_count(fast) == frame.height
    with pytest.raises(ConfigError, match=r"missing join keys \['card_id'\]"):
        entity_rows({"card": ["a"]}, ["card_id"])


def test_statuses_freshness_and_conversions(catalog: Catalog) -> None:
    resolved = catalog.resolve(["spend:amount_sum_1h", "places:merchant_count_1h"])
    at, ttl = 100 * 3_600_000, SPEND2.ttl_ms
    lookup = Lookup(
        values={(0, "amount_sum_1h"): [5.0, 0.0, 0.0], (1, "merchant_count_1h"): [2, 0, 0]},
        types={(0, "amount_sum_1h"): pl.Float64(), (1, "merchant_count_1h"): pl.Int64()},
        found=[[True, False, True], [True, False, False]],
        newest_event_ms=[[at - 1500, None, at - ttl - 1], [at - 500, None, None]],
    )
    entities = pl.DataFrame({"card_id": ["a", "b", "c"]})
    answer = OnlineFeatures.of(entities, resolved, lookup, at)
    assert answer.status("amount_sum_1h") == [PRESENT, NOT_FOUND, EXPIRED]
    assert answer.status("merchant_count_1h") == [PRESENT, NOT_FOUND, NOT_FOUND]
    assert answer.freshness("amount_sum_1h") == [1.5, None, (ttl + 1) / 1000]
    assert answer.version("amount_sum_1h") == 2
    assert answer.to_dict() == {"card_id": ["a", "b", "c"], "amount_sum_1h": [5.0, 0.0, 0.0],
                                "merchant_count_1h": [2, 0, 0]}  # fmt: skip
    meta = answer.to_polars(metadata=True)
    assert meta["spend__version"].to_list() == [2, 2, 2]
    assert meta["places__status"].to_list() == [PRESENT, NOT_FOUND, NOT_FOUND]
    assert answer.to_arrow().num_rows == 3
    assert list(answer.to_pandas().columns) == ["card_id", "amount_sum_1h", "merchant_count_1h"]
    plain = OnlineFeatures.of({"card_id": ["a", "b", "c"]}, resolved, lookup, at)
    assert plain.entities.equals(entities)  # a frame, whatever the rows were given as
    assert plain.to_dict() == answer.to_dict()
    assert plain.to_polars(metadata=True).equals(meta)
    body = answer.body()
    assert plain.body() == body
    assert body["entities"] == {"card_id": ["a", "b", "c"]}
    assert body["features"][0] | {"values": None} == {
        "name": "amount_sum_1h", "ref": "spend:amount_sum_1h", "view": "spend", "version": 2,
        "values": None, "statuses": [PRESENT, NOT_FOUND, EXPIRED],
        "freshness_seconds": [1.5, None, (ttl + 1) / 1000],
    }  # fmt: skip
    assert body["at"] == "1970-01-05T04:00:00Z"

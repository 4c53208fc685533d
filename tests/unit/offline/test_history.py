"""Point-in-time retrieval from Parquet events: every row kept in order, duplicates
too, no event after the row's time, the same values whatever the chunking or input type.
The expected values come from a plain-Python oracle of the window rule."""

from __future__ import annotations

import random

import polars as pl
import pyarrow as pa
import pytest

from featurestore.errors import ConfigError
from featurestore.features.definitions import FeatureView
from featurestore.offline import EventWriter
from featurestore.offline.history import get_historical_features

MINUTE = 60_000
T0 = 1_780_000_000_000 // 3_600_000 * 3_600_000
VIEW = FeatureView.model_validate(
    {
        "name": "spend", "source": "payments-value", "entity": "card", "owner": "o",
        "aggregations": [
            {"column": "amount", "functions": ["count", "sum", "max"], "windows": ["10m/1m"]},
            {"column": "country", "functions": ["last"], "windows": ["1h/5m"]},
        ],
    }
)  # fmt: skip
REFS = [f"spend:{f.name}" for f in VIEW.features]
KEYS = {"card": ["card_id"]}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict[str, object]]]:
    rng = random.Random(3)
    events = [
        {"card_id": f"c{rng.randint(0, 4)}", "amount": float(rng.randint(1, 100)),
         "country": rng.choice(["DE", "FR"]), "t": T0 + rng.randint(0, 120 * MINUTE),
         "_offset": i}
        for i in range(400)
    ]  # fmt: skip
    frame = pl.DataFrame(events).with_columns(
        pl.from_epoch("t", time_unit="ms").dt.replace_time_zone("UTC").alias("ts"),
        pl.lit("payments").alias("_topic"),
        pl.lit(0, pl.Int32).alias("_partition"),
    )
    root = str(tmp_path_factory.mktemp("offline"))
    writer = EventWriter(root, "payments-value", "ts")
    for part in frame.drop("t").iter_slices(150):
        writer.write(part)
    writer.write(frame.drop("t").slice(0, 50))  # a replayed batch: read back once
    return root, events


def oracle(events: list[dict[str, object]], card: str, t: int) -> dict[str, object]:
    def window(length: int, tile: int) -> list[dict[str, object]]:
        start = t // tile * tile - length + tile
        inside = [e for e in events if e["card_id"] == card and start <= e["t"] <= t]  # type: ignore[operator]
        return sorted(inside, key=lambda e: (e["t"], e["_offset"]))  # type: ignore[arg-type, return-value]

    ten, hour = window(10 * MINUTE, MINUTE), window(60 * MINUTE, 5 * MINUTE)
    amounts = [float(e["amount"]) for e in ten]  # type: ignore[arg-type]
    return {
        "amount_count_10m": len(amounts),
        "amount_sum_10m": sum(amounts),
        "amount_max_10m": max(amounts, default=None),
        "country_last_1h": hour[-1]["country"] if hour else None,
    }


def rows(n: int, seed: int) -> pl.DataFrame:
    rng = random.Random(seed)
    picks = [
        (f"c{rng.randint(0, 5)}", T0 + rng.randint(-5 * MINUTE, 130 * MINUTE)) for _ in range(n)
    ]
    picks += [picks[0], picks[0]]  # duplicate (key, timestamp) rows are kept
    return pl.DataFrame(
        {"card_id": [c for c, _ in picks], "event_timestamp": [t for _, t in picks],
         "label": list(range(len(picks)))}
    )  # fmt: skip


def test_values_match_the_oracle_rows_kept_in_order(
    store: tuple[str, list[dict[str, object]]],
) -> None:
    root, events = store
    entity_df = rows(60, seed=1)
    out = get_historical_features(entity_df, REFS, views={"spend": VIEW}, join_keys=KEYS,
                                  offline_root=root, event_time="ts")  # fmt: skip
    assert out.select(entity_df.columns).equals(entity_df)
    for row in out.iter_rows(named=True):
        want = oracle(events, row["card_id"], row["event_timestamp"])
        assert {k: row[k] for k in want} == want


def test_chunks_pandas_arrow_and_datetimes_agree(
    store: tuple[str, list[dict[str, object]]],
) -> None:
    root, _ = store
    entity_df = rows(40, seed=2)
    kwargs = {"views": {"spend": VIEW}, "join_keys": KEYS, "offline_root": root, "event_time": "ts"}
    whole = get_historical_features(entity_df, REFS, **kwargs)  # type: ignore[arg-type]
    chunked = get_historical_features(entity_df, REFS, chunk_rows=7, **kwargs)  # type: ignore[arg-type]
    assert chunked.equals(whole)
    from_pandas = get_historical_features(entity_df.to_pandas(), REFS, **kwargs)  # type: ignore[arg-type]
    assert from_pandas.drop(entity_df.columns).equals(whole.drop(entity_df.columns))
    table: pa.Table = entity_df.to_arrow()
    from_arrow = get_historical_features(table, REFS, **kwargs)  # type: ignore[arg-type]
    assert from_arrow.drop(entity_df.columns).equals(whole.drop(entity_df.columns))
    naive = entity_df.with_columns(
        pl.from_epoch("event_timestamp", time_unit="ms").alias("event_timestamp")
    )
    as_datetimes = get_historical_features(naive, REFS, **kwargs)  # type: ignore[arg-type]
    assert as_datetimes.drop(entity_df.columns).equals(whole.drop(entity_df.columns))


def test_no_rows_give_no_rows(store: tuple[str, list[dict[str, object]]]) -> None:
    root, _ = store
    empty = rows(1, seed=4).clear()
    out = get_historical_features(empty, REFS, views={"spend": VIEW}, join_keys=KEYS,
                                  offline_root=root, event_time="ts")  # fmt: skip
    assert out.height == 0
    assert out.columns == [*empty.columns, *(r.split(":")[1] for r in REFS)]


def test_clear_errors(store: tuple[str, list[dict[str, object]]]) -> None:
    root, _ = store
    kwargs = {"views": {"spend": VIEW}, "join_keys": KEYS, "offline_root": root, "event_time": "ts"}
    entity_df = rows(3, seed=3)
    with pytest.raises(ConfigError, match="no feature view 'nope'"):
        get_historical_features(entity_df, ["nope:x"], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no 'when' column"):
        get_historical_features(entity_df, REFS, timestamp_column="when", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="lacks the join keys"):
        get_historical_features(entity_df.drop("card_id"), REFS, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no events of 'payments-value'"):
        get_historical_features(entity_df, REFS, **(kwargs | {"offline_root": "/nonexistent"}))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no features requested"):
        get_historical_features(entity_df, [], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="pass a Polars or pandas"):
        get_historical_features([1, 2], REFS, **kwargs)  # type: ignore[arg-type]


def test_a_version_named_in_the_reference_is_recomputed_with_its_own_definition(
    store: tuple[str, list[dict[str, object]]],
) -> None:
    root, _ = store
    wider = FeatureView.model_validate(
        {**VIEW.model_dump(), "version": 2,
         "aggregations": [{"column": "amount", "functions": ["sum"], "windows": ["1h/5m"]}]}
    )  # fmt: skip
    entity_df = rows(40, seed=4)
    views = {"spend": VIEW, "spend@2": wider}
    both = get_historical_features(entity_df, ["spend:amount_sum_10m", "spend@2:amount_sum_1h"],
                                   views=views, join_keys=KEYS, offline_root=root,
                                   event_time="ts", full_feature_names=True)  # fmt: skip
    assert both.columns[-2:] == ["spend__amount_sum_10m", "spend_v2__amount_sum_1h"]
    alone = get_historical_features(entity_df, ["spend:amount_sum_1h"], views={"spend": wider},
                                    join_keys=KEYS, offline_root=root, event_time="ts")  # fmt: skip
    assert both["spend_v2__amount_sum_1h"].to_list() == alone["amount_sum_1h"].to_list()
    with pytest.raises(ConfigError, match="no feature view 'spend@3'"):
        get_historical_features(entity_df, ["spend@3:amount_sum_1h"], views=views,
                                join_keys=KEYS, offline_root=root, event_time="ts")  # fmt: skip

"""Differential: the small-read path (loops compiled by numba, over stored records)
returns exactly what the Polars engine returns (`window_values`), bit for bit, for every
aggregation, over random tiles and random request times; and records survive encode ->
decode unchanged."""

from __future__ import annotations

import struct
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from featurestore.errors import ConfigError
from featurestore.features import tile_partials, window_values
from featurestore.features.aggregates import merge_partials
from featurestore.features.definitions import FeatureView
from featurestore.features.sketch import K
from featurestore.features.small import LookupPlan, warm
from featurestore.features.spec import AGGREGATIONS
from featurestore.online.layout import TILE_MS, Record

MINUTE = 60_000
TEXT_AGGS = ["count", "last", "distinct"]
VIEW = FeatureView.model_validate(
    {
        "name": "spend",
        "source": "payments-value",
        "entity": "card",
        "owner": "team@example.com",
        "aggregations": [
            {"column": "x", "functions": list(AGGREGATIONS),
             "windows": ["3m/1m", "10m/1m", "30m/1m", "2h/1h"]},
            {"column": "y", "functions": ["sum", "mean", "std", "last"],
             "windows": ["5m/1m", "1h/1h"]},
            {"column": "s", "functions": TEXT_AGGS, "windows": ["4m/1m", "3h/1h"]},
        ],
    }
)  # fmt: skip
# A second view read in the same plan: another record layout (other values and sketches,
# two texts: the second one's bytes follow the first's), stacked with VIEW's records in
# one matrix.
OTHER = FeatureView.model_validate(
    {
        "name": "other",
        "source": "payments-value",
        "entity": "card",
        "owner": "team@example.com",
        "aggregations": [
            {"column": "y", "functions": ["count", "min", "max", "distinct"],
             "windows": ["2m/1m", "2h/1h"]},
            {"column": "s", "functions": ["last"], "windows": ["2m/1m"]},
            {"column": "u", "functions": ["last", "distinct"], "windows": ["3m/1m", "2h/1h"]},
        ],
    }
)  # fmt: skip
CARDS = ["a", "b", "c"]

# Values that stress the last bits of a float fold: mixed magnitudes and signs, ties.
floats = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([0.1, 0.2, 0.3, -0.0, 1e-9, 1 / 3, 3.0, 1e15, -1e15]),
)
texts = st.one_of(st.text(max_size=6), st.sampled_from(["é", "🙂", "", "a,b"]))
event = st.tuples(
    st.sampled_from(CARDS),
    # event time: mostly within 40 minutes, so that windows hold many tiles
    st.one_of(st.integers(0, 12 * MINUTE), st.integers(0, 4 * 60 * MINUTE)),
    st.one_of(st.none(), floats),
    st.one_of(st.none(), floats),
    st.one_of(st.none(), texts),
)


def _events(rows: list[tuple[str, int, float | None, float | None, str | None]]) -> pl.DataFrame:
    cards, times, xs, ys, ss = zip(*rows, strict=True)
    us = [None if s is None else s[::-1] + "~" for s in ss]  # a second text value
    return pl.DataFrame(
        {"card": cards, "ts": times, "x": xs, "y": ys, "s": ss, "u": us,
         "offset": range(len(rows))},
        schema={"card": pl.String, "ts": pl.Int64, "x": pl.Float64, "y": pl.Float64,
                "s": pl.String, "u": pl.String, "offset": pl.Int64},
    )  # fmt: skip


def _tiles(events: pl.DataFrame, g: int, split: int, view: FeatureView = VIEW) -> pl.DataFrame:
    """Partials of granularity g as a store holds them: built batch by batch, merged."""
    batches = [events[:split], events[split:]] if 0 < split < events.height else [events]
    parts = [tile_partials(b, ["card"], "ts", view.values, g) for b in batches]
    return merge_partials(parts, ["card"]) if len(parts) > 1 else parts[0]


def _held(record: Record, by_tile: dict[int, pl.DataFrame], asked: list[str]) -> list[list[bytes]]:
    """Per asked row, the records a store holds for its card."""
    held: list[list[bytes]] = [[] for _ in asked]
    for g, tiles in by_tile.items():
        encoded = record.encode(tiles, g)
        for card, rec in zip(tiles.get_column("card").to_list(), encoded, strict=True):
            for i, wanted in enumerate(asked):
                if wanted == card:
                    held[i].append(rec)
    return held


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return type(a) is type(b) and a == b


# Tiles of 0.1, 0.2, 0.3: summed newest first (the specified fold) they give 0.6, oldest
# first 0.6000000000000001, so an execution that folds in another order fails here.
@example(
    rows=[("a", m * MINUTE, v, v, None) for m, v in ((1, 0.1), (2, 0.2), (3, 0.3))],
    at=5 * MINUTE, split=0, asked=["a"],
)  # fmt: skip
# Ties of min and max between tiles: -0.0 in one, 0.0 in the other (x and y in both
# orders). The Polars engine keeps the newest tile's value (the last of its rows, sorted
# oldest tile first); so must the small read.
@example(
    rows=[("a", MINUTE, -0.0, 0.0, None), ("a", 2 * MINUTE, 0.0, -0.0, None)],
    at=5 * MINUTE, split=0, asked=["a"],
)  # fmt: skip
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(event, min_size=1, max_size=60),
    at=st.one_of(st.integers(0, 15 * MINUTE), st.integers(0, 5 * 60 * MINUTE)),
    split=st.integers(0, 60),
    asked=st.lists(st.sampled_from([*CARDS, "nobody"]), min_size=1, max_size=4),
)
def test_small_read_equals_the_polars_engine(
    rows: list[Any], at: int, split: int, asked: list[str]
) -> None:
    events = _events(rows)
    records = [Record(VIEW, frozenset({"s"})), Record(OTHER, frozenset({"s", "u"}))]
    by_tile = [{g: _tiles(events, g, split, r.view) for g in r.view.tiles_ms} for r in records]
    plan = LookupPlan.of([(r.view, [f.name for f in r.view.features], r) for r in records])
    got, held, times = plan.run([_held(r, t, asked) for r, t in zip(records, by_tile,
                                                                     strict=True)], at)  # fmt: skip

    entities = pl.DataFrame({"card": asked})
    for features, values, tiles_of in zip(plan.features, got, by_tile, strict=True):
        for f, served in zip(features, values, strict=True):
            expected = window_values(tiles_of[f.window.tile_ms], ["card"], at, f.window,
                                     {f.column: [f.function]}, rows=entities)  # fmt: skip
            want = expected.get_column(f"{f.column}__{f.function}").to_list()
            assert all(_same(a, b) for a, b in zip(served, want, strict=True)), (
                f.name, served, want,
            )  # fmt: skip
    cards = set(events.get_column("card").to_list())
    assert held[0] == held[1] == [c in cards for c in asked]
    for i, values in enumerate((("x", "y", "s"), ("y", "s", "u"))):
        for card, t in zip(asked, times[i], strict=True):
            mine = events.filter(pl.col("card") == card)
            present = mine.filter(pl.any_horizontal(pl.col(*values).is_not_null()))
            assert t == (present.get_column("ts").max() if present.height else None)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(event, min_size=1, max_size=40))
def test_records_round_trip(rows: list[Any]) -> None:
    events = _events(rows)
    record = Record(VIEW, frozenset({"s"}))
    for g in VIEW.tiles_ms:
        tiles = tile_partials(events, ["card"], "ts", VIEW.values, g)
        decoded = record.frame(record.encode(tiles, g), range(tiles.height))
        assert decoded.get_column(TILE_MS).unique().to_list() == [g]
        kept = record.kept_columns
        assert decoded.select(kept).to_dicts() == tiles.select(kept).to_dicts()


def test_a_sketch_past_k_estimates_alike() -> None:
    """More than K distinct values: the K-th hash path of both executions."""
    n = 3 * K
    events = pl.DataFrame(
        {"card": ["a"] * n, "ts": [i * 1000 for i in range(n)], "x": [float(i) for i in range(n)],
         "y": [1.0] * n, "s": [f"m{i}" for i in range(n)], "offset": range(n)}
    )  # fmt: skip
    record = Record(VIEW, frozenset({"s"}))
    held = [record.encode(tile_partials(events, ["card"], "ts", VIEW.values, g), g)
            for g in VIEW.tiles_ms]  # fmt: skip
    at = n * 1000
    names = [f.name for f in VIEW.features if f.function == "distinct"]
    plan = LookupPlan.of([(VIEW, names, record)])
    values = plan.run([[[r for rs in held for r in rs]]], at)[0][0]
    for f, got in zip(plan.features[0], values, strict=True):
        tiles = tile_partials(events, ["card"], "ts", VIEW.values, f.window.tile_ms)
        want = window_values(tiles, ["card"], at, f.window, {f.column: ["distinct"]},
                             rows=pl.DataFrame({"card": ["a"]}))  # fmt: skip
        assert got == want.get_column(f"{f.column}__distinct").to_list()
    assert max(v[0] for v in values) > K  # the estimate, not an exact count


def test_a_record_of_another_layout_is_refused_with_the_view_named() -> None:
    """A record whose fixed part is not the plan's width (written by another definition
    of the version) is refused with the fix, not read misaligned."""
    events = _events([("a", 1_000, 1.0, 2.0, "m"), ("a", 2_000, 3.0, None, "n")])
    record = Record(VIEW, frozenset({"s"}))
    good = record.encode(tile_partials(events, ["card"], "ts", VIEW.values, MINUTE), MINUTE)
    plan = LookupPlan.of([(VIEW, [f.name for f in VIEW.features], record)])
    plan.run([[good]], 60 * MINUTE)  # as written: fine
    with pytest.raises(ConfigError, match=r"view 'spend' .*bump `version`"):
        plan.run([[[good[0][: 8 * record.width - 8]]]], 60 * MINUTE)  # a fixed part cut short
    # Sketches that run past their record's end (their sizes say more hashes than follow).
    with pytest.raises(ConfigError, match=r"sketches run past its end .*bump `version`"):
        plan.run([[[good[0][: 8 * record.width]]]], 5 * MINUTE)
    # A view whose records are their fixed part only: a longer record is refused too.
    plain = FeatureView.model_validate(
        {"name": "plain", "source": "payments-value", "entity": "card", "owner": "t@example.com",
         "aggregations": [{"column": "x", "functions": ["sum"], "windows": ["2m/1m"]}]}
    )  # fmt: skip
    exact = Record(plain, frozenset())
    held = exact.encode(tile_partials(events, ["card"], "ts", plain.values, MINUTE), MINUTE)
    plan = LookupPlan.of([(VIEW, [f.name for f in VIEW.features], record),
                          (plain, [f.name for f in plain.features], exact)])  # fmt: skip
    assert plan.run([[good], [held]], 60 * MINUTE)[1] == [[True], [True]]
    with pytest.raises(ConfigError, match=r"view 'plain' .*bump `version`"):
        plan.run([[good], [[held[0] + bytes(8)]]], 60 * MINUTE)


def test_warm_compiles_every_kernel_a_lookup_runs() -> None:
    """After `warm` (what a feature server runs as it starts), a lookup of two views with
    every aggregation compiles nothing more: no request pays for numba's compiler."""
    from featurestore.features import kernels

    warm()
    kinds = (kernels.stack, kernels.scatter, kernels.distinct, kernels.texts, kernels.finish)
    compiled = {k: list(k.signatures) for k in kinds}
    assert all(compiled.values())
    events = _events([("a", 1_000, 1.0, 2.0, "m"), ("b", 70_000, None, 3.0, "n")])
    records = [Record(VIEW, frozenset({"s"})), Record(OTHER, frozenset({"s", "u"}))]
    plan = LookupPlan.of([(r.view, [f.name for f in r.view.features], r) for r in records])
    held = [_held(r, {g: _tiles(events, g, 0, r.view) for g in r.view.tiles_ms}, ["a", "b"])
            for r in records]  # fmt: skip
    plan.run(held, 5 * MINUTE)
    assert {k: list(k.signatures) for k in compiled} == compiled

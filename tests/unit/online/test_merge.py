"""The consumer's merge of binary tile records (`online.merge`) against the Polars
engine's (`aggregates.merge_partials`): one window semantics, two executions, equal on
every part a record keeps, for random batches split anywhere (no Redis here)."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.features.aggregates import merge_partials, tile_partials
from featurestore.features.definitions import FeatureView
from featurestore.online.layout import ROW, TILE_MS, Record
from featurestore.online.merge import damaged, merge_grouped, merge_pairs

VIEW = FeatureView.model_validate(
    {
        "name": "v", "source": "s", "entity": "card", "owner": "o",
        "aggregations": [
            {"column": "amount", "functions": ["count", "sum", "mean", "std", "min", "max",
                                               "last"], "windows": ["1h"]},
            {"column": "country", "functions": ["last", "distinct"], "windows": ["1h"]},
            {"column": "merchant", "functions": ["distinct"], "windows": ["1h"]},
        ],
    }
)  # fmt: skip
RECORD = Record(VIEW, frozenset({"country", "merchant"}))
TILE = 60_000

amounts = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from([0.0, -0.0]))
texts = st.one_of(st.none(), st.sampled_from(["DE", "FR", "é\x00,", ""]))
merchants = st.one_of(st.none(), st.integers(0, 400).map(str))
event = st.tuples(
    st.sampled_from(["a", "b", "c"]), st.integers(0, 3 * TILE - 1), amounts, texts, merchants
)


def frame(events: list[tuple[object, ...]], first_offset: int) -> pl.DataFrame:
    return pl.DataFrame(
        [(*e, first_offset + i) for i, e in enumerate(events)],
        schema={"card": pl.String, "ts": pl.Int64, "amount": pl.Float64,
                "country": pl.String, "merchant": pl.String, "offset": pl.Int64},
        orient="row",
    )  # fmt: skip


def partials(events: pl.DataFrame) -> pl.DataFrame:
    return tile_partials(events, ["card"], "ts", VIEW.values, TILE)


def decoded(records: list[bytes]) -> list[dict[str, object]]:
    rows = RECORD.frame(records, range(len(records))).drop(ROW, TILE_MS)
    return rows.select(RECORD.kept_columns).to_dicts()


@settings(max_examples=150, deadline=None)
@given(st.lists(event, min_size=1, max_size=60), st.lists(event, min_size=1, max_size=60))
def test_merged_records_equal_the_engines_merge(
    older: list[tuple[object, ...]], newer: list[tuple[object, ...]]
) -> None:
    a, b = partials(frame(older, 0)), partials(frame(newer, len(older)))
    both = a.join(b, on=["card", "tile"], how="inner", suffix="__b").select("card", "tile")
    a = both.join(a, on=["card", "tile"]).sort("card", "tile")
    b = both.join(b, on=["card", "tile"]).sort("card", "tile")
    merged = merge_pairs(RECORD, RECORD.encode(a, TILE), RECORD.encode(b, TILE))
    engine = merge_partials([a, b], ["card"]).drop("card")
    assert decoded(merged) == decoded(RECORD.encode(engine, TILE))
    assert damaged(RECORD, merged) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(event, min_size=1, max_size=20), min_size=1, max_size=5))
def test_a_chain_merges_as_pairs_from_the_left(batches: list[list[tuple[object, ...]]]) -> None:
    """`merge_grouped` (every chain's i-th follower in one step) equals merging each
    chain pair by pair, stored record first, in order."""
    offset, encoded = 0, []
    for events in batches:
        tiles = partials(frame(events, offset))
        offset += len(events)
        encoded.append(dict(zip(zip(tiles["card"], tiles["tile"], strict=True),
                                RECORD.encode(tiles, TILE), strict=True)))  # fmt: skip
    chains = {}
    for batch in encoded:
        for at, rec in batch.items():
            chains.setdefault(at, []).append(rec)
    order = sorted(chains)
    heads = [chains[at][0] for at in order]
    groups = [i for i, at in enumerate(order) for _ in chains[at][1:]]
    followers = [rec for at in order for rec in chains[at][1:]]
    import numpy as np

    got = merge_grouped(RECORD, heads, np.array(groups, dtype=np.int64), followers)
    for at, value in zip(order, got, strict=True):
        expected = chains[at][0]
        for rec in chains[at][1:]:
            expected = merge_pairs(RECORD, [expected], [rec])[0]
        assert value == expected


def test_records_of_another_layout_are_named_before_anything_is_merged() -> None:
    good = RECORD.encode(partials(frame([("a", 5, 1.0, "DE", "m1")], 0)), TILE)[0]
    cut, longer = good[:40], good + b"x"
    assert damaged(RECORD, [good, cut, good, longer, b""]) == [1, 3, 4]

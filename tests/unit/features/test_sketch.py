"""The distinct-count sketch: stable hashes, exact below K, mergeable in any order."""

from __future__ import annotations

import random

import polars as pl
import pytest

from featurestore.features.sketch import (
    K,
    estimate,
    hash_column,
    merge_sketches,
    sketch_of,
    stable_hash,
)


def sketch(values: list[str]) -> pl.DataFrame:
    frame = pl.DataFrame(
        {"g": [0] * len(values), "v": values}, schema={"g": pl.Int64, "v": pl.String}
    )
    hashed = frame.with_columns(hash_column(frame.get_column("v")).alias("h"))
    return hashed.group_by("g").agg(sketch_of(pl.col("h")).alias("s"))


def count(frame: pl.DataFrame) -> int:
    return int(frame.select(estimate(pl.col("s"))).item())


def test_hash_is_stable_and_below_2_to_53() -> None:
    # Fixed value: a sketch stored in Redis must mean the same after any upgrade.
    assert stable_hash("merchant_1") == stable_hash("merchant_1")
    assert stable_hash("merchant_1") != stable_hash("merchant_2")
    assert all(stable_hash(f"m{i}") < 2**53 for i in range(1000))
    assert stable_hash("DE") == 6857002092916185


def test_nulls_are_not_values() -> None:
    frame = pl.DataFrame({"v": ["a", None, "a", "b"]})
    hashes = hash_column(frame.get_column("v"))
    assert hashes.null_count() == 1
    assert hashes[0] == hashes[2] == stable_hash("a")


def test_exact_below_k() -> None:
    assert count(sketch([f"m{i % 50}" for i in range(1000)])) == 50
    empty = pl.DataFrame({"s": [[], None]}, schema={"s": pl.List(pl.UInt64)})
    assert empty.select(estimate(pl.col("s"))).to_series().to_list() == [0, 0]


def test_estimate_above_k_within_a_few_standard_errors() -> None:
    n = 20_000
    estimated = count(sketch([f"m{i}" for i in range(n)]))
    assert abs(estimated - n) / n < 4 / (K - 2) ** 0.5


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_merge_equals_sketch_of_union_in_any_order(seed: int) -> None:
    rng = random.Random(seed)
    values = [f"m{rng.randint(0, 5000)}" for _ in range(3000)]
    parts = [values[i::4] for i in range(4)]
    rng.shuffle(parts)
    pieces = pl.concat([sketch(p) for p in parts])
    merged = pieces.group_by("g").agg(merge_sketches(pl.col("s")).alias("s"))
    whole = sketch(values)
    assert merged.get_column("s").to_list() == whole.get_column("s").to_list()
    assert len(whole.get_column("s")[0]) == K

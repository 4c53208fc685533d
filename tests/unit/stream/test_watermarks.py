"""The per-partition watermark rule: decisions depend only on earlier events in the
partition (never on batch cuts), seeds come from committed metadata, and metadata
carries the watermark forward."""

from __future__ import annotations

import random

import polars as pl
from confluent_kafka import TopicPartition

from featurestore.stream.watermarks import Watermarks, _parse

RETENTION = 1_000


def batch(
    times: list[int], partition: int = 0, first_offset: int = 0, first_row: int = 0
) -> pl.DataFrame:
    n = len(times)
    return pl.DataFrame(
        {"ts": times, "_topic": ["t"] * n, "_partition": [partition] * n,
         "_offset": list(range(first_offset, first_offset + n)),
         "_row": list(range(first_row, first_row + n))},
        schema_overrides={"_partition": pl.Int32, "_row": pl.Int64},
    )  # fmt: skip


def late_rows(marks: Watermarks, frame: pl.DataFrame, seed: int | None) -> set[int]:
    seeds = {("t", int(p)): seed for p in frame["_partition"].unique()}
    kept, late = marks.split(frame, "ts", seeds)
    assert kept.height + len(late) == frame.height
    assert kept["_row"].to_list() == sorted(kept["_row"].to_list())
    return {r.row for r in late}


def test_late_only_beyond_retention_behind_earlier_events() -> None:
    marks = Watermarks(RETENTION)
    #          0     1     2     3     4 (late: 5000-1001)  5 (on the edge: kept)
    times = [5000, 4500, 3000, 6000, 4999, 5000]
    assert late_rows(marks, batch(times), None) == {2, 4}
    assert marks.attach([TopicPartition("t", 0, 6)])[0].metadata == "wm=6000"


def test_batch_cuts_do_not_change_decisions() -> None:
    rng = random.Random(5)
    times = [rng.randint(0, 10_000) + i * 10 for i in range(300)]
    whole = late_rows(Watermarks(RETENTION), batch(times), None)
    cut = Watermarks(RETENTION)
    pieces: set[int] = set()
    seed = None
    for start in range(0, 300, 37):
        part = batch(times[start : start + 37], first_offset=start, first_row=start)
        pieces |= late_rows(cut, part, seed)
        seed = _parse(cut.attach([TopicPartition("t", 0, start + 37)])[0].metadata)
    assert pieces == whole


def test_partitions_are_independent_and_no_retention_means_never_late() -> None:
    marks = Watermarks(RETENTION)
    frame = pl.concat([batch([9000, 100], partition=0), batch([200, 150], 1, first_row=2)])
    assert late_rows(marks, frame, None) == {1}
    assert late_rows(Watermarks(None), batch([9000, 1]), None) == set()
    assert _parse("garbage") is None
    assert _parse(None) is None

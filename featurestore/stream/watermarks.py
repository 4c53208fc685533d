"""Per-partition watermarks: which events are too late for the feature views' tiles.

The watermark of a source partition before an event is the highest event time of the
valid events before it in that partition (offset order). An event whose time is more
than the retention (longest window + allowed lateness, the largest over this
consumer's views) behind that watermark is LATE_EVENT: its tile may already be gone.
Later events within the retention update their tile as usual.

Invariants:
- the decision for an event depends only on the events before it in its partition,
  never on where batches were cut, so a replay after a crash decides the same;
- a partition's watermark is committed with its offset, as the offset's metadata, in
  the same transaction (`attach`); a consumer taking over a partition reads it back
  from the committed offset (`seeds`), so it survives restarts and rebalances.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
from confluent_kafka import Consumer, TopicPartition

from featurestore.contracts.violations import Reason, Rejection
from featurestore.features.aggregates import epoch_ms

Partition = tuple[str, int]
_PREFIX = "wm="


class Watermarks:
    """The watermarks of the partitions this consumer processes."""

    def __init__(self, retention_ms: int | None) -> None:
        self.retention_ms = retention_ms
        self._known: dict[Partition, int | None] = {}

    def seeds(
        self, consumer: Consumer, partitions: list[TopicPartition]
    ) -> dict[Partition, int | None]:
        """Watermarks before this batch; unknown ones are read from committed metadata."""
        unknown = [TopicPartition(p.topic, p.partition) for p in partitions
                   if (p.topic, p.partition) not in self._known]  # fmt: skip
        if unknown:
            for tp in consumer.committed(unknown, timeout=30):
                self._known[(tp.topic, tp.partition)] = _parse(tp.metadata)
        return {(p.topic, p.partition): self._known[(p.topic, p.partition)] for p in partitions}

    def split(
        self, valid: pl.DataFrame, event_time: str, seeds: dict[Partition, int | None]
    ) -> tuple[pl.DataFrame, list[Rejection]]:
        """(on-time rows, LATE_EVENT rejections); advances the watermarks past the batch."""
        if self.retention_ms is None or valid.is_empty():
            return valid, []
        seed = pl.DataFrame(
            {"_topic": [t for t, _ in seeds], "_partition": [p for _, p in seeds],
             "__seed": list(seeds.values())},
            schema={"_topic": pl.String, "_partition": pl.Int32, "__seed": pl.Int64},
        )  # fmt: skip
        t = epoch_ms(valid.schema, event_time)
        part = ["_topic", "_partition"]
        marked = (
            valid.with_columns(t.alias("__t"))
            .join(seed, on=part, how="left", maintain_order="left")
            .sort(*part, "_offset", maintain_order=True)
            .with_columns(
                pl.max_horizontal(
                    pl.col("__t").cum_max().shift(1).over(part), pl.col("__seed")
                ).alias("__wm")
            )
        )
        late = marked.filter(pl.col("__t") < pl.col("__wm") - self.retention_ms)
        newest = marked.group_by(part).agg(pl.col("__t").max(), pl.col("__seed").first())
        for topic, partition, top, before in newest.iter_rows():
            self._known[(topic, partition)] = top if before is None else max(top, before)
        retention = self.retention_ms
        rejections = [
            Rejection(row, Reason.LATE_EVENT, _message(at, mark, retention), event_time, "late")
            for row, at, mark in late.select("_row", "__t", "__wm").iter_rows()
        ]
        kept = marked.filter(~pl.col("_row").is_in(late.get_column("_row").implode()))
        return kept.sort("_row").drop("__t", "__seed", "__wm"), rejections

    def attach(self, offsets: list[TopicPartition]) -> list[TopicPartition]:
        """The offsets to commit, each carrying its partition's watermark as metadata."""
        out = []
        for tp in offsets:
            mark = self._known.get((tp.topic, tp.partition))
            if mark is None:
                out.append(tp)
            else:
                metadata = f"{_PREFIX}{mark}"
                out.append(TopicPartition(tp.topic, tp.partition, tp.offset, metadata=metadata))
        return out

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Revoked partitions: their next owner reads the committed watermark."""
        for tp in partitions:
            self._known.pop((tp.topic, tp.partition), None)


def _parse(metadata: str | None) -> int | None:
    if metadata and metadata.startswith(_PREFIX):
        try:
            return int(metadata.removeprefix(_PREFIX))
        except ValueError:
            return None
    return None


def _message(at: int, mark: int, retention_ms: int) -> str:
    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat()

    return (
        f"event time {iso(at)} is more than {retention_ms // 1000}s (the views' longest window "
        f"+ allowed lateness) behind its partition's watermark {iso(mark)}; its tiles are gone"
    )

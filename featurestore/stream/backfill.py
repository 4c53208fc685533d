"""Backfill: a view version's online state built from the offline events, with the one
window engine (`RedisOnlineStore.apply`, the consumer's own write path).

`backfill` applies, per source partition, the longest run of offsets whose events are
at or before ``end`` (all of them without ``end``), day by day in event-time order, and
records the last offset it covered per partition (``through:<topic>:<partition>`` in
the version's meta hash). The consumer hands over from there: when it starts computing
the version, it first applies the offline events after ``through`` and before its batch
(`apply_gap`), so the stream continues the backfill without a gap; the store's offset
guard makes any overlap a no-op, so there is no double count either.

Invariants: only validated events are read (the offline store holds nothing else), each
(topic, partition, offset) once; events before ``start`` are skipped (windows that reach
back before it are then partial, and the report says so).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from featurestore.errors import ConfigError
from featurestore.features.definitions import FeatureView
from featurestore.offline.events import DATE_COLUMN, scan_events
from featurestore.online.lifecycle import Lifecycle
from featurestore.online.store import RedisOnlineStore

log = logging.getLogger(__name__)
Partition = tuple[str, int]


@dataclass
class BackfillReport:
    events: int = 0
    days: int = 0
    seconds: float = 0.0
    through: dict[Partition, int] = field(default_factory=dict)


def backfill(
    store: RedisOnlineStore,
    view: FeatureView,
    *,
    offline_root: str,
    event_time: str,
    start: int | None = None,
    end: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BackfillReport:
    """Apply the offline events of ``view.source`` (epoch ms ``start``..``end``) to the
    version's online keys; ``progress(done, days)`` after each day."""
    started = time.monotonic()
    scan = _events(store, view, offline_root, event_time)
    moment = pl.col(event_time).dt.epoch("ms")
    cuts = _cuts(scan, moment, end)
    wanted = scan.join(cuts.lazy(), on=["_topic", "_partition"], how="left").filter(
        pl.col("__cut").is_null() | (pl.col("_offset") < pl.col("__cut"))
    )
    if start is not None:
        wanted = wanted.filter(moment >= start)
    days = sorted(wanted.select(pl.col(DATE_COLUMN).unique()).collect().to_series().to_list())
    store.register(view, _text_values(view, scan.collect_schema()))
    report = BackfillReport(days=len(days))
    for done, day in enumerate(days, start=1):
        events = wanted.filter(pl.col(DATE_COLUMN) == day).drop("__cut").collect()
        report.events += events.height
        _apply(store, view, events.sort(event_time, "_offset"), event_time)
        if progress is not None:
            progress(done, len(days))
    covered = scan.group_by("_topic", "_partition").agg(pl.col("_offset").max().alias("__max"))
    through = covered.collect().join(cuts, on=["_topic", "_partition"], how="left")
    for topic, partition, last, cut in through.iter_rows():
        report.through[(topic, partition)] = int(cut) - 1 if cut is not None else int(last)
    Lifecycle(store.client, store.prefix).record_offsets(
        view.name, view.version, "through", report.through
    )
    report.seconds = time.monotonic() - started
    return report


def apply_gap(
    store: RedisOnlineStore,
    view: FeatureView,
    *,
    offline_root: str,
    event_time: str,
    partition: Partition,
    after: int,
    before: int,
) -> int:
    """Apply the offline events of one partition with offsets in (``after``,
    ``before``): the consumer's hand-over from a backfill. Returns events applied."""
    if before <= after + 1:
        return 0
    topic, number = partition
    scan = _events(store, view, offline_root, event_time).filter(
        pl.col("_topic") == topic,
        pl.col("_partition") == number,
        pl.col("_offset").is_between(after + 1, before - 1),
    )
    events = scan.collect().sort(event_time, "_offset")
    _apply(store, view, events, event_time)
    return events.height


def _events(
    store: RedisOnlineStore, view: FeatureView, offline_root: str, event_time: str
) -> pl.LazyFrame:
    values = [v.column for v in view.values.values()]
    columns = [*store.entities[view.entity], event_time, *values, DATE_COLUMN]
    try:
        scan = scan_events(offline_root, view.source, columns=columns)
        scan.collect_schema()
    except (FileNotFoundError, pl.exceptions.ComputeError) as exc:
        raise ConfigError(
            f"no offline events of {view.source} under {offline_root} ({exc}); run the "
            "consumer with its offline sink first, or pass --offline-path"
        ) from None
    return scan.with_columns(pl.col("_partition").cast(pl.Int32))


def _cuts(scan: pl.LazyFrame, moment: pl.Expr, end: int | None) -> pl.DataFrame:
    """Per partition, the first offset of an event after ``end`` (none without it)."""
    if end is None:
        return pl.DataFrame(schema={"_topic": pl.String, "_partition": pl.Int32,
                                    "__cut": pl.Int64})  # fmt: skip
    late = scan.filter(moment > end).group_by("_topic", "_partition")
    return late.agg(pl.col("_offset").min().alias("__cut")).collect()


def _text_values(view: FeatureView, schema: pl.Schema) -> set[str]:
    return {name for name, v in view.values.items() if not schema[v.column].is_numeric()}


def _apply(
    store: RedisOnlineStore, view: FeatureView, events: pl.DataFrame, event_time: str
) -> None:
    for chunk in events.iter_slices(100_000):
        store.apply(view, chunk, event_time)

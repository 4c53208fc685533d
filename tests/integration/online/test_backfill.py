"""Backfill on real Redis from Parquet events: the online state equals applying the same
events as a stream would, and with ``end`` each partition is covered up to the last
offset before its first later event (so the consumer's hand-over has no hole)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from featurestore.offline import EventWriter
from featurestore.online import RedisOnlineStore, connect
from featurestore.online.lifecycle import Lifecycle
from featurestore.stream.backfill import apply_gap, backfill
from tests.frames import assert_close
from tests.integration.online.test_store import BASE, HOUR, MINUTE, VIEW, events

pytestmark = pytest.mark.integration
FEATURES = [f.name for f in VIEW.features]


def partitioned(n: int) -> pl.DataFrame:
    """``events`` spread over two partitions, each with its own offsets."""
    frame = events(n, seed=5, cards=12).with_columns(
        (pl.col("_offset") % 2).cast(pl.Int32).alias("_partition")
    )
    return frame.with_columns(pl.int_range(pl.len()).over("_partition").alias("_offset"))


def store_for(services: Any, prefix: str) -> RedisOnlineStore:
    return RedisOnlineStore(connect(services.redis_url), {"card": ["card_id"]}, prefix)


def test_backfill_equals_streaming_and_stops_where_the_stream_takes_over(
    services: Any, redis_prefix: str, tmp_path: Path
) -> None:
    frame = partitioned(1_200)
    EventWriter(str(tmp_path), VIEW.source, "ts").write(frame)
    end = BASE + 2 * HOUR
    filled = store_for(services, redis_prefix + "filled")
    report = backfill(filled, VIEW, offline_root=str(tmp_path), event_time="ts", end=end)
    moment = pl.col("ts").dt.epoch("ms")
    cut = frame.filter(moment > end).group_by("_partition").agg(pl.col("_offset").min())
    expected = {("payments", p): o - 1 for p, o in cut.iter_rows()}
    assert report.through == expected
    marks = Lifecycle(filled.client, filled.prefix).version_info(VIEW.name, VIEW.version)
    assert marks["through"] == expected
    assert marks["last_write"] is not None

    prefix_events = (
        frame.join(cut, on="_partition", suffix="_cut")
        .filter(pl.col("_offset") < pl.col("_offset_cut"))
        .drop("_offset_cut")
    )
    assert report.events == prefix_events.height
    streamed = store_for(services, redis_prefix + "streamed")
    streamed.register(VIEW, {"merchant_id", "country"})
    for batch in prefix_events.sort("ts").iter_slices(97):  # another batching, same state
        streamed.apply(VIEW, batch, "ts")
    cards = pl.DataFrame({"card_id": sorted(set(frame["card_id"]))})
    at = end + 5 * MINUTE  # after every event applied (none later than end in the prefix)
    assert_close(filled.read(VIEW, cards, at, FEATURES), streamed.read(VIEW, cards, at, FEATURES))

    # The hand-over: the rest of each partition, as the consumer's gap fill applies it.
    for (topic, partition), through in report.through.items():
        last = int(frame.filter(pl.col("_partition") == partition)["_offset"].max())  # type: ignore[arg-type]
        apply_gap(filled, VIEW, offline_root=str(tmp_path), event_time="ts",
                  partition=(topic, partition), after=through, before=last + 1)  # fmt: skip
    everything = store_for(services, redis_prefix + "everything")
    everything.register(VIEW, {"merchant_id", "country"})
    everything.apply(VIEW, frame.sort("ts"), "ts")
    later = BASE + 3 * HOUR + MINUTE
    assert_close(filled.read(VIEW, cards, later, FEATURES),
                 everything.read(VIEW, cards, later, FEATURES))  # fmt: skip


def test_backfill_without_events_says_what_to_do(
    services: Any, redis_prefix: str, tmp_path: Path
) -> None:
    from featurestore.errors import ConfigError

    with pytest.raises(ConfigError, match="no offline events of payments-value"):
        backfill(store_for(services, redis_prefix), VIEW, offline_root=str(tmp_path),
                 event_time="ts")  # fmt: skip

"""Quix Streams' side of the ingest comparison; runs in bench/peers/.venvs/quix.

    python quix_side.py ingest SPEC_JSON

A Quix Streams Application reads the bench topic from the start (a fresh consumer group),
decodes the Confluent-framed Avro with Quix's AvroDeserializer backed by the schema registry
(confluent-kafka's AvroDeserializer inside), takes event time from the payload's `ts`, and per
card (the message key) keeps count, sum and mean of `amount`:

  sliding   sliding_window(1h, grace 10 s).agg(count, sum, mean).current(), each result
            SET in Redis by Quix's RedisSink under "<prefix>:<card>" (flushed at each
            checkpoint, every commit_interval)
  tumbling  tumbling_window(1h, grace 10 s).agg(...).final(), no sink: Quix's cheapest
            windowed aggregation (results only when a window closes, nothing served)

Results (marked JSON lines, see protocol.py): "caught_up" once N messages are processed (or
the deadline passed), with the times; then it keeps running, so run.py can time freshness
probes, until "stop" arrives on stdin; then "stopped".
"""

from __future__ import annotations

import cProfile
import logging
import pstats
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from datetime import timedelta
from typing import Any

from protocol import commands, emit, memory_mb, spec
from quixstreams import Application
from quixstreams.dataframe.windows.aggregations import Count, Mean, Sum
from quixstreams.models.serializers.avro import AvroDeserializer
from quixstreams.models.serializers.schema_registry import SchemaRegistryClientConfig
from quixstreams.sinks.community.redis import RedisSink


def event_time(value: Any, _headers: Any, timestamp: int, _kind: Any) -> int:
    """The payload's `ts` (timestamp-millis: a datetime once decoded), in ms."""
    ts = value.get("ts") if isinstance(value, dict) else None
    return int(ts.timestamp() * 1000) if ts is not None else timestamp


class Progress:
    """Messages processed; "caught_up" once, at the N-th or at the deadline."""

    def __init__(self, n: int) -> None:
        self.n, self.count, self.first = n, 0, 0.0
        self.started = time.perf_counter()
        self.done = threading.Event()
        self.lock = threading.Lock()

    def processed(self, _topic: str, _partition: int, _offset: int) -> None:
        self.count += 1
        if self.count == 1:
            self.first = time.perf_counter()
        if self.count == self.n:
            self.report(complete=True)

    def report(self, complete: bool) -> None:
        with self.lock:
            if self.done.is_set():
                return
            self.done.set()
        now, count = time.perf_counter(), self.count
        first = self.first or now
        emit("caught_up", complete=complete, events=count, wall_s=round(now - self.started, 3),
             first_s=round(first - self.started, 3),
             events_per_s=round(count / max(now - self.started, 1e-9)),
             steady_events_per_s=round((count - 1) / max(now - first, 1e-9)),
             memory_mb=memory_mb())  # fmt: skip


def quiet(*_args: Any, **_kwargs: Any) -> bool:
    return False  # late events are counted by Quix; do not log each


def pipeline(app: Application, s: dict[str, Any]) -> None:
    """The topic (Avro via the registry, event time from `ts`) and the windowed features."""
    registry = SchemaRegistryClientConfig(url=s["registry_url"])
    topic = app.topic(s["topic"], key_deserializer="str", timestamp_extractor=event_time,
                      value_deserializer=AvroDeserializer(
                          schema_registry_client_config=registry))  # fmt: skip
    sdf = app.dataframe(topic)
    hour, grace = timedelta(hours=1), timedelta(milliseconds=int(s["grace_ms"]))
    aggregations = {"count": Count(), "sum": Sum("amount"), "mean": Mean("amount")}
    if s["variant"] == "sliding":
        window = sdf.sliding_window(hour, grace_ms=grace, on_late=quiet)
        prefix = s["prefix"]
        sink = RedisSink(s["redis_host"], int(s["redis_port"]), 0,
                         key_serializer=lambda key, _value: f"{prefix}:{key}")  # fmt: skip
        window.agg(**aggregations).current().sink(sink)
    elif s["variant"] == "tumbling":
        window = sdf.tumbling_window(hour, grace_ms=grace, on_late=quiet)
        window.agg(**aggregations).final()
    else:
        raise SystemExit(f"unknown variant {s['variant']!r}")


def control(app: Application, progress: Progress, deadline_s: float) -> None:
    """Threads: a partial "caught_up" at the deadline; app.stop() on "stop" (or stdin
    closed)."""
    stop, deadline = threading.Event(), time.monotonic() + deadline_s

    def listen() -> None:
        for command in commands():
            if command.get("op") == "stop":
                break
        stop.set()

    def watch() -> None:
        while not stop.wait(0.2):
            if time.monotonic() > deadline and not progress.done.is_set():
                progress.report(complete=False)
        app.stop()

    threading.Thread(target=listen, daemon=True).start()
    threading.Thread(target=watch, daemon=True).start()


def ingest(s: dict[str, Any]) -> None:
    progress = Progress(int(s["n"]))
    interval = float(s["commit_interval"])
    with tempfile.TemporaryDirectory(prefix="quix-state-") as state_dir:
        app = Application(
            broker_address=s["bootstrap"], consumer_group=s["group"],
            auto_offset_reset="earliest", commit_interval=interval,
            consumer_poll_timeout=interval, state_dir=state_dir, loglevel="WARNING",
            on_message_processed=progress.processed,
        )  # fmt: skip
        pipeline(app, s)
        control(app, progress, float(s["deadline_s"]))
        profiler = cProfile.Profile() if s.get("profile") else None
        with profiler or nullcontext():
            app.run()
        if profiler is not None:  # where Quix's time went, to the log
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        emit("stopped", events=progress.count, memory_mb=memory_mb(),
             wall_s=round(time.perf_counter() - progress.started, 3))  # fmt: skip


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    part = sys.argv[1] if len(sys.argv) > 1 else ""
    if part != "ingest":
        print(__doc__, file=sys.stderr)
        return 2
    ingest(spec())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Ingest throughput of one consumer process, end to end on real Kafka, in one run.

setup: Kafka (--kafka, $FEATURESTORE_KAFKA_BOOTSTRAP) and Redis (--redis,
$FEATURESTORE_REDIS_URL), each else from a LocalStack in a temporary home; the registry
in-process; schemas/card_payment.v1.avsc under <topic>-value. produce: N card payments of the
last hour over --cards cards (skewed: a few cards pay often, most rarely; skewed merchants),
--bad-rate bad ones of several reasons, keyed by card, into P partitions. Then, each over the
whole topic with a fresh group:
  floor      a bare confluent-kafka consume loop, no processing
  shipped    ConsumerRuntime as shipped: decode (batch path on), validate, Parquet sink in
             a temp dir, dead letters + offsets in one transaction
  batch-off  the same with the decoder's batch path off (per-record fastavro)
  features   shipped plus the example feature views of consumers/payments.toml (card_spend,
             card_places) applied to Redis by RedisOnlineStore, under a key prefix of this
             run (deleted at the end). Target: 100k events/s per process.

events/s: from the end of the first batch to the end of the last (group join and close
excluded; wall_s has them). Per batch: `process` latency, split into decode, validate
(`split`), watermarks (`Watermarks.split`), sink (Parquet write), online (`store.apply`; in
it aggregate = `_arguments`, the Polars pre-aggregation into tile records, and send =
`_send`, the reads of the hashes, the merge in the consumer and the guarded writes), commit
and other (source columns, dead letters); poll %: the steady window's share outside
`process`. features also gives entity applies and segments per second, Redis' own time per
entity (INFO commandstats: every command, and `write.lua`'s), a check of the online 7-day
counts of 200 cards against the offline Parquet (PASS/FAIL), and a cProfile of one full
batch's applies replayed under new offsets. The machine is shared: compare ratios within
one run.

    .venv/bin/python bench/ingest.py [--quick] [--events N] [--cards C] [--redis URL]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import logging
import os
import pstats
import random
import statistics
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import polars as pl
from confluent_kafka import Consumer, Producer, libversion
from confluent_kafka.admin import AdminClient, NewTopic
from machine import describe  # bench/machine.py: this folder is on sys.path
from rich.progress import MofNCompleteColumn, Progress, TimeRemainingColumn

import featurestore.stream.runtime as runtime_module
from featurestore.contracts.codec import BatchDecoder
from featurestore.contracts.registry.client import RegistryClient
from featurestore.contracts.registry.embedded import EmbeddedRegistry
from featurestore.features.definitions import FeatureView
from featurestore.local import LocalStack
from featurestore.offline import scan_events
from featurestore.online import ApplyStats, RedisOnlineStore, connect, redact_url
from featurestore.settings import Settings
from featurestore.stream import ConsumerDefinition, ConsumerRuntime, load_definition
from featurestore.stream.definition import Sinks

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = (ROOT / "schemas" / "card_payment.v1.avsc").read_text()
RESULTS = ROOT / "bench" / "results" / "ingest.json"
EXAMPLE = ROOT / "consumers" / "payments.toml"  # its entities, views and online sink
STEPS = ("decode", "validate", "watermarks", "sink", "online", "commit")  # + other
ONLINE_STEPS = ("aggregate", "send")  # inside online
SPLIT = ("decode", "validate", "watermarks", "sink", "online", "aggregate", "send", "commit",
         "other")  # fmt: skip
TARGET = 100_000  # events/s per process with the example views' Redis and Parquet sinks
CHECKED = ("card_spend", "amount_count_7d")  # the online value checked against Parquet
HOUR_MS = 3_600_000

# Bad events, made by `PaymentStream.bad`: what is wrong -> the reason it must get.
BAD_KINDS = {
    "negative amount": "CONSTRAINT_VIOLATION", "lower-case currency": "CONSTRAINT_VIOLATION",
    "malformed card id": "CONSTRAINT_VIOLATION", "empty card id": "MISSING_ENTITY",
    "a day ahead": "FUTURE_EVENT", "junk bytes": "DECODE_ERROR", "truncated body": "DECODE_ERROR",
}  # fmt: skip


@dataclass(frozen=True)
class Services:
    """Where Kafka and Redis answer, and what they are (for the report)."""

    bootstrap: str
    kafka: str
    redis_url: str
    redis: str


@contextmanager
def services(kafka_given: str | None, redis_given: str | None) -> Iterator[Services]:
    """Kafka and Redis: those given (flag, then environment), the others local for this run."""
    settings = Settings()
    bootstrap, redis_url = (
        kafka_given or settings.kafka_bootstrap,
        redis_given or settings.redis_url,
    )
    kafka_is = "external (version not probed)" if bootstrap else (
        f"Apache Kafka {settings.kafka_version} (KRaft, local)")  # fmt: skip
    redis_is = "external" if redis_url else "redis-server (local)"
    missing = [name for name, given in (("kafka", bootstrap), ("redis", redis_url)) if not given]
    if not missing:
        yield Services(str(bootstrap), kafka_is, str(redis_url), redis_is)
        return
    with tempfile.TemporaryDirectory(prefix="fs-bench-stack-") as home:
        stack = LocalStack(Path(home), settings.cache_dir, settings.kafka_version)
        try:
            up = stack.up(services=missing, say=lambda m: print(f"  {m}"))
            bootstrap, redis_url = bootstrap or up.kafka, redis_url or up.redis
            assert bootstrap is not None
            assert redis_url is not None
            yield Services(bootstrap, kafka_is, redis_url, redis_is)
        finally:
            stack.down()


@contextmanager
def registry(bootstrap: str, topic: str) -> Iterator[str]:
    """The registry app in this process, its schemas in `topic`; yields its URL."""
    server = EmbeddedRegistry(bootstrap, topic).start()
    try:
        yield server.url
    finally:
        server.stop()


def delete_topics(bootstrap: str, prefix: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=30).topics if t.startswith(prefix)]
    for future in admin.delete_topics(names).values() if names else ():
        with suppress(Exception):  # best effort
            future.result(30)


class PaymentStream:
    """Card payments of the last hour: a few cards pay often, most rarely (power law)."""

    def __init__(self, n: int, cards: int, schema_id: int, seed: int = 7) -> None:
        self.n, self.rng = n, random.Random(seed)
        self.cards, self.now_ms = cards, int(time.time() * 1000)  # card_000000 ... (cards - 1)
        self.prefix = b"\x00" + schema_id.to_bytes(4, "big")
        self.parsed = fastavro.parse_schema(json.loads(SCHEMA))
        self.currencies = ["EUR"] * 6 + ["USD"] * 2 + ["GBP", "CHF"]
        self.countries = ["DE"] * 4 + ["FR", "FR", "NL", "ES", "IT", "US", "GB", "PL"]
        self.channels = ["POS"] * 5 + ["ONLINE"] * 3 + ["ATM", "MOTO"]
        self.categories = ["5411", "5812", "5999", "4111", "6011", "5541", "5732"]

    def event(self, i: int) -> dict[str, Any]:
        r = self.rng.random
        online = r() < 0.35
        return {
            "payment_id": f"pay_{self.rng.getrandbits(64):016x}",
            "card_id": f"card_{int(self.cards * r() ** 3):06d}",
            "amount": min(round(self.rng.lognormvariate(3, 1.2), 2), 50_000.0),
            "currency": self.rng.choice(self.currencies),
            "merchant_id": f"merchant_{int(50_000 * r() ** 2)}",
            "merchant_category": self.rng.choice(self.categories),
            "country": self.rng.choice(self.countries),
            "channel": "ONLINE" if online else self.rng.choice(self.channels),
            "ip_address": f"10.{i % 251}.{i % 241}.{i % 239}" if online else None,
            "ts": self.now_ms - HOUR_MS + i * HOUR_MS // self.n - self.rng.randrange(5000),
        }

    def encode(self, event: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self.prefix)
        fastavro.schemaless_writer(buf, self.parsed, event)
        return buf.getvalue()

    def bad(self, kind: str, event: dict[str, Any]) -> bytes:
        override: dict[str, Any] = {
            "negative amount": {"amount": -event["amount"] - 1},
            "lower-case currency": {"currency": "eur"},
            "malformed card id": {"card_id": "card_12ab"},
            "empty card id": {"card_id": ""},
            "a day ahead": {"ts": self.now_ms + 24 * HOUR_MS},
        }.get(kind, {})
        if kind == "junk bytes":  # any first byte but the magic 0
            return bytes([self.rng.randrange(1, 256)]) + self.rng.randbytes(self.rng.randrange(60))
        framed = self.encode({**event, **override})
        return framed[: len(framed) // 2] if kind == "truncated body" else framed


def produce(bootstrap: str, topic: str, stream: PaymentStream, bad_rate: float) -> Counter[str]:
    """Produce the stream; returns the bad events sent, by the reason they should get."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "queue.buffering.max.messages": 500_000})  # fmt: skip
    bad: Counter[str] = Counter()
    columns = [*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns) as progress:
        task = progress.add_task("producing", total=stream.n)
        for i in range(stream.n):
            event = stream.event(i)
            if stream.rng.random() < bad_rate:
                kind = stream.rng.choice(list(BAD_KINDS))
                value = stream.bad(kind, event)
                bad[BAD_KINDS[kind]] += 1
            else:
                value = stream.encode(event)
            while True:
                try:
                    producer.produce(topic, value, event["card_id"].encode())
                    break
                except BufferError:
                    producer.poll(0.05)
            if i % 10_000 == 9_999:
                producer.poll(0)
                progress.update(task, completed=i + 1)
        if producer.flush(120) != 0:
            raise RuntimeError("the producer could not deliver every event in 120 s")
        progress.update(task, completed=stream.n)
    return bad


@dataclass(frozen=True)
class Bench:
    """Where and what one run measures."""

    bootstrap: str
    url: str  # the registry
    topic: str
    n: int
    batch: int
    redis_url: str


def floor(bench: Bench) -> dict[str, Any]:
    """A bare consume loop: the most any consumer in this process could do."""
    group = {"group.id": f"bench-floor-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
    group |= {"auto.offset.reset": "earliest", "isolation.level": "read_committed"}
    consumer = Consumer({"bootstrap.servers": bench.bootstrap, **group})
    consumer.subscribe([bench.topic])
    started, seen, first, first_end = time.perf_counter(), 0, 0, 0.0
    try:
        while seen < bench.n and time.perf_counter() - started < 600:
            got = sum(1 for m in consumer.consume(bench.batch, 1.0) if m.error() is None)
            if got and not first:
                first, first_end = got, time.perf_counter()
            seen += got
        end = time.perf_counter()
    finally:
        consumer.close()
    rate = round((seen - first) / max(end - first_end, 1e-9))
    wall = round(end - started, 2)
    return {"strategy": "floor", "events": seen, "events_per_s": rate, "wall_s": wall}


@dataclass
class Call:
    """One `process` call: when, how many records, and the seconds of each step in it."""

    start: float
    records: int
    end: float = 0.0
    steps: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    entities: int = 0  # online: entity hashes a script was sent to (ApplyStats.entities)
    segments: int = 0  # online: (entity, partition, tile) segments applied


class Shim:
    """Timing wrappers around one runtime's steps (the product code is not edited)."""

    def __init__(self, full: int) -> None:
        self.calls: list[Call] = []
        self.fast_rows = 0  # records the decoder's batch path decoded
        self.full = full  # records of a full batch
        # The latest full batch's `store.apply` arguments per view, replayed by `profile`.
        self.applied: dict[str, tuple[FeatureView, pl.DataFrame, str]] = {}

    def timed(self, step: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.calls[-1].steps[step] += time.perf_counter() - started

        return wrapper

    def install(self, runtime: ConsumerRuntime) -> None:
        decode, process, sink = (
            self.timed("decode", runtime.decoder.decode),
            runtime.process,
            runtime.sink,
        )
        assert sink is not None

        def counted_decode(*args: Any, **kwargs: Any) -> Any:
            decoded = decode(*args, **kwargs)
            self.fast_rows += decoded.fast_rows
            return decoded

        def timed_process(records: list[Any]) -> None:
            self.calls.append(call := Call(time.perf_counter(), len(records)))
            try:
                process(records)
            finally:
                call.end = time.perf_counter()

        runtime.decoder.decode = counted_decode  # type: ignore[method-assign]
        # The runtime encodes a batch's files, then stores them (`EventWriter.write` is both).
        sink.encode = self.timed("sink", sink.encode)  # type: ignore[method-assign]
        sink.store = self.timed("sink", sink.store)  # type: ignore[method-assign]
        commit = self.timed("commit", runtime.checkpointer.commit)
        runtime.checkpointer.commit = commit  # type: ignore[method-assign]
        runtime.process = timed_process  # type: ignore[method-assign]
        if runtime.online is not None:
            self.install_online(runtime, runtime.online)

    def install_online(self, runtime: ConsumerRuntime, store: RedisOnlineStore) -> None:
        # The runtime prepares every view's writes, then sends them (`store.apply` is both).
        prepare, send = (
            self.timed("online", store.prepare_apply),
            self.timed("online", store.send_apply),
        )

        def kept_prepare(view: FeatureView, events: pl.DataFrame, time_col: str) -> Any:
            if self.calls[-1].records >= self.full:
                self.applied[view.name] = (view, events, time_col)
            return prepare(view, events, time_col)

        def counted_send(prepared: Any) -> ApplyStats:
            stats: ApplyStats = send(prepared)
            call = self.calls[-1]
            call.entities += stats.entities
            call.segments += stats.segments
            return stats

        store.prepare_apply = kept_prepare  # type: ignore[method-assign]
        store.send_apply = counted_send  # type: ignore[method-assign]
        store._arguments = self.timed("aggregate", store._arguments)  # type: ignore[method-assign]
        store._send = self.timed("send", store._send)  # type: ignore[method-assign]
        split = self.timed("watermarks", runtime.watermarks.split)
        runtime.watermarks.split = split  # type: ignore[method-assign]

    def summary(self, events: int) -> dict[str, Any]:
        """Over the steady batches (all but the first, which also pays for the writer
        schema fetch and init_transactions): rate, latencies, where batch time went."""
        first, steady = self.calls[0], self.calls[1:] or self.calls
        window = (self.calls[-1].end - first.end) if self.calls[1:] else first.end - first.start
        ms = [(c.end - c.start) * 1000 for c in steady]
        cuts = statistics.quantiles(ms, n=100, method="inclusive") if ms[1:] else ms * 99
        latency = {"p50": cuts[49], "p99": cuts[98], "max": max(ms)}
        busy = sum(c.end - c.start for c in steady)
        ran = {k for c in steady for k in c.steps}  # steps that ran (no online: none of it)
        steps = {k: sum(c.steps[k] for c in steady) for k in SPLIT if k in ran}
        steps["other"] = busy - sum(v for k, v in steps.items() if k in STEPS)
        counted = events - first.records if self.calls[1:] else events
        out = {
            "events_per_s": round(counted / window), "batches": len(self.calls),
            "first_batch_ms": round((first.end - first.start) * 1000, 1),
            "batch_ms": {k: round(v, 1) for k, v in latency.items()},
            "split_pct_of_batch": {k: round(100 * v / busy, 1) for k, v in steps.items()},
            "ms_per_batch": {k: round(1000 * v / len(steady), 1) for k, v in steps.items()},
            "poll_pct": round(100 * max(window - busy, 0) / window, 1),
            "batch_path_pct": round(100 * self.fast_rows / max(events, 1), 1),
        }  # fmt: skip
        if "online" in steps:
            applies, segments = sum(c.entities for c in steady), sum(c.segments for c in steady)
            out["online"] = {
                "entity_applies": applies, "segments": segments,
                "entity_applies_per_s": round(applies / window),
                "segments_per_s": round(segments / window),
                "entity_applies_per_online_s": round(applies / steps["online"]),
                "entity_applies_per_send_s": round(applies / steps["send"]),
                "entity_applies_per_batch": round(applies / len(steady)),
                "events_per_online_s": round(counted / steps["online"]),
            }  # fmt: skip
        return out


def example_views(subject: str) -> dict[str, Any]:
    """The example consumer's entities, views (re-sourced to the bench subject) and online
    sink, as ConsumerDefinition fields."""
    example = load_definition(EXAMPLE)
    views = [FeatureView.model_validate({**v.model_dump(), "source": subject})
             for v in example.views]  # fmt: skip
    return {"entities": example.entities, "views": views,
            "sinks": Sinks(online=example.sinks.online)}  # fmt: skip


def run_consumer(
    bench: Bench, label: str, *, batch_path: bool = True, features: bool = False
) -> dict[str, Any]:
    """ConsumerRuntime end to end over the whole topic, with a fresh group and DLQ; with
    `features`, the example views to Redis too, checked and profiled after the run."""
    subject, client = f"{bench.topic}-value", RegistryClient(bench.url)
    definition = ConsumerDefinition(
        name=f"bench-{label}", topics=[bench.topic], subject=subject, batch_size=bench.batch,
        group=f"bench-{label}-{uuid.uuid4().hex[:8]}", dlq_topic=f"{bench.topic}.dlq.{label}",
        batch_wait_ms=1000, **(example_views(subject) if features else {}),
    )  # fmt: skip
    shim, patched = Shim(bench.batch), vars(runtime_module)  # the runtime's `split`, timed below
    split = patched["split"]
    deadline = time.monotonic() + 120 + bench.n / 5000
    with ExitStack() as stack:
        offline = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"fs-bench-{label}-"))
        store, extra = None, {}
        if features:
            redis = connect(bench.redis_url, check=True)
            stack.callback(redis.close)
            stack.callback(delete_keys, redis, bench.topic)
            store = RedisOnlineStore(redis, definition.join_keys, prefix=bench.topic)
            before = redis_time(redis)
        kafka = {"bootstrap.servers": bench.bootstrap}
        runtime = ConsumerRuntime(definition, kafka, client, offline, online=store)
        if not batch_path:
            reader = client.version(subject)["schema"]
            runtime.decoder = BatchDecoder(reader, client.schema, fast_path_min_records=10**12)
        shim.install(runtime)
        patched["split"] = shim.timed("validate", split)
        started = time.perf_counter()
        try:
            stats = runtime.run(lambda s: s.events_in >= bench.n or time.monotonic() > deadline)
        finally:
            patched["split"] = split
        wall = time.perf_counter() - started
        rows = scan_events(offline, subject).select(pl.len()).collect().item()
        summary = shim.summary(stats.events_in)
        if store is not None:
            calls, usec, total = (a - b for a, b in zip(redis_time(store.client), before,
                                                        strict=True))  # fmt: skip
            entities = max(sum(c.entities for c in shim.calls), 1)
            summary["online"] |= {
                "evalsha_calls": calls, "evalsha_server_s": round(usec / 1e6, 2),
                "evalsha_server_us_per_call": round(usec / max(calls, 1), 1),
                # A call carries up to 20 entities on one Redis: Redis' time per entity.
                "evalsha_server_us_per_entity": round(usec / entities, 1),
                # Every command (the reads of the hashes too): what a write costs Redis.
                "redis_server_s": round(total / 1e6, 2),
                "redis_server_us_per_entity": round(total / entities, 1),
            }  # fmt: skip
            fresh = RedisOnlineStore(store.client, definition.join_keys, prefix=bench.topic)
            extra["check"] = verify(fresh, definition.views, offline, subject)
            extra["profile"] = profile(fresh, shim.applied)  # after the check: it adds events
    client.close()
    return {
        "strategy": label, "events": stats.events_in, "valid": stats.valid,
        "dead_lettered": dict(stats.dead_lettered), "parquet_rows": rows,
        "wall_s": round(wall, 2), **summary, **extra,
    }  # fmt: skip


def redis_time(client: Any) -> tuple[int, int, int]:
    """EVALSHA calls and microseconds, and microseconds of every command, Redis has spent
    since its start (or CONFIG RESETSTAT)."""
    stats = client.info("commandstats")
    script = stats.get("cmdstat_evalsha", {})
    total = sum(int(s.get("usec", 0)) for s in stats.values())
    return int(script.get("calls", 0)), int(script.get("usec", 0)), total


def delete_keys(client: Any, prefix: str) -> None:
    """Unlink every key of this run (an external Redis outlives it)."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=10_000))
    for i in range(0, len(keys), 5_000):
        client.unlink(*keys[i : i + 5_000])


def verify(
    store: RedisOnlineStore, views: list[FeatureView], offline: str, subject: str, n: int = 200
) -> dict[str, Any]:
    """Online `amount_count_7d` now, summed over n cards (the 20 busiest and the rest drawn
    at random), equals those cards' valid events in the offline Parquet; so does each card's."""
    name, feature = CHECKED
    view = next(v for v in views if v.name == name)
    per_card = scan_events(offline, subject).group_by("card_id").agg(pl.len().alias("want"))
    counts = per_card.collect().sort("want", "card_id", descending=[True, False])
    rest = counts.slice(20)
    cards = pl.concat([counts.head(20), rest.sample(min(n - 20, rest.height), seed=5)])
    at_ms = int(time.time() * 1000)
    got = store.read(view, cards.select("card_id"), at_ms, [feature]).get_column(feature)
    cards = cards.with_columns(got.alias("got"))
    online, parquet = int(cards.get_column("got").sum()), int(cards.get_column("want").sum())
    differ = cards.filter(pl.col("got") != pl.col("want")).height
    return {"cards": cards.height, "feature": f"{name}:{feature}", "online": online,
            "parquet": parquet, "cards_differing": differ,
            "result": "PASS" if online == parquet and differ == 0 else "FAIL"}  # fmt: skip


def profile(
    store: RedisOnlineStore,
    applied: dict[str, tuple[FeatureView, pl.DataFrame, str]],
    top: int = 10,
) -> dict[str, Any]:
    """One full batch's `store.apply` of each view, replayed under new offsets so its scripts
    merge into the stored tiles as a live batch's do: timed once plain, then under cProfile
    (top functions by cumulative time, per batch)."""
    plain, profiler = {}, cProfile.Profile()
    for shift, profiled in ((1 << 40, False), (2 << 40, True)):
        for name, (view, events, time_col) in applied.items():
            replay = events.with_columns(pl.col("_offset") + shift)
            started = time.perf_counter()
            with profiler if profiled else nullcontext():
                store.apply(view, replay, time_col)
            if not profiled:
                plain[name] = {
                    "events": events.height,
                    "ms": round(1000 * (time.perf_counter() - started), 1),
                }
    rows, stats = [], pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    for (path, line, func), (_, calls, own, cum, _) in stats.items():
        short = path.split("/site-packages/")[-1].split("/featurestore/")[-1]
        rows.append({"function": f"{func} ({short}:{line})" if line else func, "calls": calls,
                     "own_ms": round(own * 1000, 1), "cum_ms": round(cum * 1000, 1)})  # fmt: skip
    total = sum(r["own_ms"] for r in rows)
    return {"plain": plain, "profiled_ms": round(total, 1),
            "top_cumulative": sorted(rows, key=lambda r: -r["cum_ms"])[:top],
            "top_own": sorted(rows, key=lambda r: -r["own_ms"])[:top]}  # fmt: skip


def check(result: dict[str, Any], n: int, bad: Counter[str]) -> list[str]:
    """What is wrong with one consumer run (empty: nothing)."""
    got, valid, dead = result["events"], result["valid"], result["dead_lettered"]
    problems = [] if got == n else [f"events_in {got} != {n} produced"]
    if valid + sum(dead.values()) != got:
        problems.append(f"valid {valid} + dead {sum(dead.values())} != in {got}")
    if result["parquet_rows"] != valid:
        problems.append(f"Parquet holds {result['parquet_rows']} rows, {valid} were valid")
    if dead != dict(bad):
        problems.append(f"dead letters {dead} != bad produced {dict(bad)}")
    if result.get("check", {}).get("result") == "FAIL":
        problems.append(f"online counts differ from the Parquet's: {result['check']}")
    return problems


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: one line per strategy; split columns are % of batch time (aggregate and
    redis are parts of online)."""
    head = ["strategy", "events/s", "x floor", "p50 ms", "p99 ms", "max ms", "batch path %"]
    head += [f"{step} %" for step in SPLIT] + ["poll %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ms, split = r.get("batch_ms", {}), r.get("split_pct_of_batch", {})
        cells = [r["strategy"], f"{r['events_per_s']:,}", f"{r.get('ratio_to_floor', 1.0):.2f}"]
        cells += [ms.get(k, "-") for k in ("p50", "p99", "max")]
        cells += [r.get("batch_path_pct", "-"), *(split.get(s, "-") for s in SPLIT)]
        lines.append("| " + " | ".join(map(str, [*cells, r.get("poll_pct", "-")])) + " |")
    return lines


def online_lines(result: dict[str, Any]) -> list[str]:
    """Markdown: the features run against its target, its Redis rates, check and profile."""
    o, check, prof = result["online"], result["check"], result["profile"]
    ms = result["ms_per_batch"]
    lines = [
        f"- **features: {result['events_per_s']:,} events/s against the target of {TARGET:,}** "
        f"({result['events_per_s'] / TARGET:.2f} of it; {result['ratio_to_floor']:.2f} x the "
        "floor of this run).",
        f"- Redis: {o['entity_applies_per_s']:,} entity applies/s and {o['segments_per_s']:,} "
        f"segments/s over the run ({o['entity_applies_per_batch']:,} entity applies per full "
        f"batch, both views); per second inside `online`: {o['entity_applies_per_online_s']:,}"
        f" applies, {o['events_per_online_s']:,} events; inside `_send`: "
        f"{o['entity_applies_per_send_s']:,} applies.",
        f"- Per batch: online {ms['online']} ms = aggregate {ms['aggregate']} ms + send "
        f"{ms['send']} ms + {round(ms['online'] - ms['aggregate'] - ms['send'], 1)} ms else; "
        f"Redis' own time {o['redis_server_us_per_entity']} us per entity, every command "
        f"({o['redis_server_s']} s in all), of which `write.lua` "
        f"{o['evalsha_server_us_per_entity']} us ({o['evalsha_server_us_per_call']} us per "
        f"call, {o['evalsha_calls']:,} calls; INFO commandstats).",
        f"- Check: {check['feature']} at now over {check['cards']} cards (the 20 busiest, the "
        f"rest at random): online {check['online']:,}, Parquet {check['parquet']:,}, "
        f"{check['cards_differing']} cards differ: **{check['result']}**.",
        "",
        "One full batch's applies replayed under new offsets (merging into stored tiles): "
        + ", ".join(f"{k} {v['ms']} ms ({v['events']:,} events)" for k, v in prof["plain"].items())
        + f"; under cProfile {prof['profiled_ms']} ms.",
    ]
    for title, rows in (("cumulative", prof["top_cumulative"]), ("own", prof["top_own"])):
        lines += ["", f"Top 10 by {title} time:", "", "| function | calls | own ms | cum ms |",
                  "|---|---|---|---|"]  # fmt: skip
        lines += [f"| `{r['function']}` | {r['calls']:,} | {r['own_ms']} | {r['cum_ms']} |"
                  for r in rows]  # fmt: skip
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--events", type=int, help="events to produce (1000000; --quick 50000)")
    add("--cards", type=int, help="cards the events are spread over, skewed (100000; "
        "--quick 10000); at most 1000000 (the contract's card_NNNNNN)")  # fmt: skip
    add("--bad-rate", type=float, default=0.01, help="share of bad events (0.01)")
    add("--batch-size", type=int, default=10_000, help="records per consume/batch (10000)")
    add("--partitions", type=int, default=4, help="partitions of the bench topic (4)")
    add("--kafka", help="bootstrap HOST:PORT; default $FEATURESTORE_KAFKA_BOOTSTRAP, else a "
        "local Kafka started (and stopped) for this run")  # fmt: skip
    add("--redis", help="Redis URL; default $FEATURESTORE_REDIS_URL, else a local redis-server "
        "started (and stopped) for this run")  # fmt: skip
    add("--quick", action="store_true", help="a smoke run: fewer events and cards, results "
        "to a temporary file unless --out")  # fmt: skip
    add("--out", type=Path, help=f"JSON results ({RESULTS}); .md beside it")
    args = parser.parse_args(argv)
    args.events = args.events or (50_000 if args.quick else 1_000_000)
    args.cards = args.cards or (10_000 if args.quick else 100_000)
    if not 1 <= args.cards <= 1_000_000:
        parser.error("--cards must be within 1 and 1000000 (card ids are card_NNNNNN)")
    quick_out = Path(tempfile.gettempdir()) / "fs-bench-ingest-quick.json"
    args.out = args.out or (quick_out if args.quick else RESULTS)
    return args


def measure(args: argparse.Namespace, cleanup: ExitStack) -> dict[str, Any]:
    """Set up, produce, and measure the floor and every strategy: the report."""
    topic, load = f"bench-ingest-{uuid.uuid4().hex[:8]}", os.getloadavg()[0]  # the box is shared
    found = cleanup.enter_context(services(args.kafka, args.redis))
    bootstrap = found.bootstrap
    cleanup.callback(gc.collect)  # close clients held in cycles before Kafka stops
    cleanup.callback(delete_topics, bootstrap, topic)  # the source and its DLQs
    cleanup.callback(delete_topics, bootstrap, f"_schemas-{topic}")
    url = cleanup.enter_context(registry(bootstrap, f"_schemas-{topic}"))
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
    client = RegistryClient(url)
    schema_id = int(client.register(f"{topic}-value", SCHEMA)["id"])
    client.close()
    redis = connect(found.redis_url, check=True)
    redis_version = redis.info("server").get("redis_version", "?")
    redis.close()
    packages = ("polars", "pyarrow", "fastavro", "confluent-kafka", "uvicorn", "redis", "hiredis")
    info = describe(packages, kafka=found.kafka, redis=f"{found.redis} Redis {redis_version}")
    info["versions"]["librdkafka"] = libversion()[0]
    print(f"{info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB, {found.kafka}, "
          f"{info['redis']} at {redact_url(found.redis_url)}")  # fmt: skip
    print(f"Python {info['python']}, {info['versions']}")
    bench = Bench(bootstrap, url, topic, args.events, args.batch_size, found.redis_url)
    started = time.perf_counter()
    bad = produce(bootstrap, topic, PaymentStream(bench.n, args.cards, schema_id), args.bad_rate)
    rate = round(bench.n / (time.perf_counter() - started))
    print(f"produced {bench.n:,} events over {args.cards:,} cards at {rate:,}/s; bad, by "
          f"expected reason: {dict(bad)}")  # fmt: skip
    rows, problems = [floor(bench)], {}
    print(f"floor (bare consume): {rows[0]['events_per_s']:,} events/s")
    variants = {"shipped": {}, "batch-off": {"batch_path": False}, "features": {"features": True}}
    for label, options in variants.items():
        result = run_consumer(bench, label, **options)
        result["ratio_to_floor"] = round(result["events_per_s"] / rows[0]["events_per_s"], 3)
        problems[label] = check(result, bench.n, bad)
        rows.append(result)
        print(f"{label}: {result['events_per_s']:,} events/s; problems: {problems[label]}")
        if "check" in result:
            print(f"  online check: {result['check']}")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": info,
        "events": bench.n, "cards": args.cards, "bad_rate": args.bad_rate,
        "batch_size": bench.batch, "partitions": args.partitions, "bad_produced": dict(bad),
        "produce_events_per_s": rate, "target_events_per_s": TARGET, "results": rows,
        "problems": problems, "load_avg_1m_at_start_and_end": [load, os.getloadavg()[0]],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["RUST_BACKTRACE"] = "0"  # a read_avro panic (a fallback batch) prints one line
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with ExitStack() as cleanup:
        report = measure(args, cleanup)
    lines, info = table(report["results"]), report["machine"]
    features = next(r for r in report["results"] if r["strategy"] == "features")
    lines += ["", *online_lines(features)]
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    run = f"--events {args.events} --cards {args.cards} --bad-rate {args.bad_rate} "
    intro = [
        f"# Ingest, one consumer process ({report['date'][:10]})\n",
        f"`bench/ingest.py {run}--batch-size {args.batch_size} --partitions {args.partitions}` "
        f"on {info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB; {info['kafka']}; "
        f"{info['redis']}; Python {info['python']}, polars {info['versions'].get('polars')}, "
        f"librdkafka {info['versions']['librdkafka']}, redis-py {info['versions'].get('redis')}, "
        f"hiredis {info['versions'].get('hiredis')}. events/s over the steady window; split "
        "columns are % of batch (`process`) time, aggregate and send being parts of online; "
        "poll % is the window's share outside `process`. features = shipped + the views of "
        "consumers/payments.toml to Redis.\n",
    ]
    args.out.with_suffix(".md").write_text("\n".join([*intro, *lines]) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 1 if any(report["problems"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Ingest throughput of one consumer process, end to end on real Kafka, in one run.

setup: Kafka (--kafka, $FEATURESTORE_KAFKA_BOOTSTRAP, else a LocalStack in a temporary home)
and the registry in-process; schemas/card_payment.v1.avsc under <topic>-value. produce: N
card payments (skewed cards and merchants, --bad-rate bad ones of several reasons), keyed by
card, into P partitions. Then, each over the whole topic with a fresh group:
  floor      a bare confluent-kafka consume loop, no processing
  shipped    ConsumerRuntime as shipped: decode (batch path on), validate, Parquet sink in
             a temp dir, dead letters + offsets in one transaction
  batch-off  the same with the decoder's batch path off (per-record fastavro)

events/s: from the end of the first batch to the end of the last (group join and close
excluded; wall_s has them). Per batch: `process` latency, split into decode, validate
(`split`), sink write, commit and other (source columns, dead letters); poll %: the steady
window's share outside `process`. The machine is shared: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import logging
import os
import random
import statistics
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
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
from featurestore.local import LocalStack
from featurestore.offline import scan_events
from featurestore.settings import Settings
from featurestore.stream import ConsumerDefinition, ConsumerRuntime

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = (ROOT / "schemas" / "card_payment.v1.avsc").read_text()
RESULTS = ROOT / "bench" / "results" / "ingest.json"
STEPS = ("decode", "validate", "sink", "commit", "other")
HOUR_MS = 3_600_000

# Bad events, made by `PaymentStream.bad`: what is wrong -> the reason it must get.
BAD_KINDS = {
    "negative amount": "CONSTRAINT_VIOLATION", "lower-case currency": "CONSTRAINT_VIOLATION",
    "malformed card id": "CONSTRAINT_VIOLATION", "empty card id": "MISSING_ENTITY",
    "a day ahead": "FUTURE_EVENT", "junk bytes": "DECODE_ERROR", "truncated body": "DECODE_ERROR",
}  # fmt: skip


@contextmanager
def kafka(given: str | None) -> Iterator[tuple[str, str]]:
    """(bootstrap, Kafka version): the given cluster, or a local one for this run."""
    settings = Settings()
    if given or settings.kafka_bootstrap:
        yield str(given or settings.kafka_bootstrap), "external (version not probed)"
        return
    with tempfile.TemporaryDirectory(prefix="fs-bench-stack-") as home:
        stack = LocalStack(Path(home), settings.cache_dir, settings.kafka_version)
        try:
            endpoints = stack.up(services=["kafka"], say=lambda m: print(f"  {m}"))
            assert endpoints.kafka is not None
            yield endpoints.kafka, f"Apache Kafka {settings.kafka_version} (KRaft, local)"
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

    def __init__(self, n: int, schema_id: int, seed: int = 7) -> None:
        self.n, self.rng = n, random.Random(seed)
        self.cards, self.now_ms = max(1000, min(n // 5, 999_999)), int(time.time() * 1000)
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


class Shim:
    """Timing wrappers around one runtime's steps (the product code is not edited)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.fast_rows = 0  # records the decoder's batch path decoded

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
        sink.write = self.timed("sink", sink.write)  # type: ignore[method-assign]
        commit = self.timed("commit", runtime.checkpointer.commit)
        runtime.checkpointer.commit = commit  # type: ignore[method-assign]
        runtime.process = timed_process  # type: ignore[method-assign]

    def summary(self, events: int) -> dict[str, Any]:
        """Over the steady batches (all but the first, which also pays for the writer
        schema fetch and init_transactions): rate, latencies, where batch time went."""
        first, steady = self.calls[0], self.calls[1:] or self.calls
        window = (self.calls[-1].end - first.end) if self.calls[1:] else first.end - first.start
        ms = [(c.end - c.start) * 1000 for c in steady]
        cuts = statistics.quantiles(ms, n=100, method="inclusive") if ms[1:] else ms * 99
        latency = {"p50": cuts[49], "p99": cuts[98], "max": max(ms)}
        busy = sum(c.end - c.start for c in steady)
        steps: dict[str, float] = {k: sum(c.steps[k] for c in steady) for k in STEPS[:-1]}
        steps["other"] = busy - sum(steps.values())
        counted = events - first.records if self.calls[1:] else events
        return {
            "events_per_s": round(counted / window), "batches": len(self.calls),
            "first_batch_ms": round((first.end - first.start) * 1000, 1),
            "batch_ms": {k: round(v, 1) for k, v in latency.items()},
            "split_pct_of_batch": {k: round(100 * v / busy, 1) for k, v in steps.items()},
            "ms_per_batch": {k: round(1000 * v / len(steady), 1) for k, v in steps.items()},
            "poll_pct": round(100 * max(window - busy, 0) / window, 1),
            "batch_path_pct": round(100 * self.fast_rows / max(events, 1), 1),
        }  # fmt: skip


def run_consumer(bench: Bench, label: str, batch_path: bool) -> dict[str, Any]:
    """ConsumerRuntime end to end over the whole topic, with a fresh group and DLQ."""
    subject, client = f"{bench.topic}-value", RegistryClient(bench.url)
    definition = ConsumerDefinition(
        name=f"bench-{label}", topics=[bench.topic], subject=subject, batch_size=bench.batch,
        group=f"bench-{label}-{uuid.uuid4().hex[:8]}", dlq_topic=f"{bench.topic}.dlq.{label}",
        batch_wait_ms=1000,
    )  # fmt: skip
    shim, patched = Shim(), vars(runtime_module)  # the runtime's `split`, timed below
    split = patched["split"]
    deadline = time.monotonic() + 120 + bench.n / 5000
    with tempfile.TemporaryDirectory(prefix=f"fs-bench-{label}-") as offline:
        kafka = {"bootstrap.servers": bench.bootstrap}
        runtime = ConsumerRuntime(definition, kafka, client, offline)
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
    client.close()
    return {
        "strategy": label, "events": stats.events_in, "valid": stats.valid,
        "dead_lettered": dict(stats.dead_lettered), "parquet_rows": rows,
        "wall_s": round(wall, 2), **shim.summary(stats.events_in),
    }  # fmt: skip


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
    return problems


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: one line per strategy; split columns are % of batch time."""
    head = ["strategy", "events/s", "x floor", "p50 ms", "p99 ms", "max ms", "batch path %"]
    head += [f"{step} %" for step in STEPS] + ["poll %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ms, split = r.get("batch_ms", {}), r.get("split_pct_of_batch", {})
        cells = [r["strategy"], f"{r['events_per_s']:,}", f"{r.get('ratio_to_floor', 1.0):.2f}"]
        cells += [ms.get(k, "-") for k in ("p50", "p99", "max")]
        cells += [r.get("batch_path_pct", "-"), *(split.get(s, "-") for s in STEPS)]
        lines.append("| " + " | ".join(map(str, [*cells, r.get("poll_pct", "-")])) + " |")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--events", type=int, default=1_000_000, help="events to produce (1000000)")
    add("--bad-rate", type=float, default=0.01, help="share of bad events (0.01)")
    add("--batch-size", type=int, default=10_000, help="records per consume/batch (10000)")
    add("--partitions", type=int, default=4, help="partitions of the bench topic (4)")
    add("--kafka", help="bootstrap HOST:PORT; default $FEATURESTORE_KAFKA_BOOTSTRAP, else a "
        "local Kafka started (and stopped) for this run")  # fmt: skip
    add("--out", type=Path, default=RESULTS, help=f"JSON results ({RESULTS}); .md beside it")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, cleanup: ExitStack) -> dict[str, Any]:
    """Set up, produce, and measure the floor and both strategies: the report."""
    topic = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    bootstrap, kafka_version = cleanup.enter_context(kafka(args.kafka))
    cleanup.callback(gc.collect)  # close clients held in cycles before Kafka stops
    cleanup.callback(delete_topics, bootstrap, topic)  # the source and its DLQs
    cleanup.callback(delete_topics, bootstrap, f"_schemas-{topic}")
    url = cleanup.enter_context(registry(bootstrap, f"_schemas-{topic}"))
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
    client = RegistryClient(url)
    schema_id = int(client.register(f"{topic}-value", SCHEMA)["id"])
    client.close()
    info = describe(("polars", "pyarrow", "fastavro", "confluent-kafka", "uvicorn"),
                    kafka=kafka_version)  # fmt: skip
    info["versions"]["librdkafka"] = libversion()[0]
    print(f"{info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB, {kafka_version}")
    print(f"Python {info['python']}, {info['versions']}")
    bench = Bench(bootstrap, url, topic, args.events, args.batch_size)
    started = time.perf_counter()
    bad = produce(bootstrap, topic, PaymentStream(bench.n, schema_id), args.bad_rate)
    rate = round(bench.n / (time.perf_counter() - started))
    print(f"produced {bench.n:,} events at {rate:,}/s; bad, by expected reason: {dict(bad)}")
    rows, problems = [floor(bench)], {}
    print(f"floor (bare consume): {rows[0]['events_per_s']:,} events/s")
    for label, batch_path in (("shipped", True), ("batch-off", False)):
        result = run_consumer(bench, label, batch_path)
        result["ratio_to_floor"] = round(result["events_per_s"] / rows[0]["events_per_s"], 3)
        problems[label] = check(result, bench.n, bad)
        rows.append(result)
        print(f"{label}: {result['events_per_s']:,} events/s; problems: {problems[label]}")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": info,
        "events": bench.n, "bad_rate": args.bad_rate, "batch_size": bench.batch,
        "partitions": args.partitions, "bad_produced": dict(bad), "produce_events_per_s": rate,
        "results": rows, "problems": problems,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["RUST_BACKTRACE"] = "0"  # a read_avro panic (a fallback batch) prints one line
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with ExitStack() as cleanup:
        report = measure(args, cleanup)
    lines, info = table(report["results"]), report["machine"]
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    run = f"--events {args.events} --bad-rate {args.bad_rate} --batch-size {args.batch_size} "
    intro = [
        f"# Ingest, one consumer process ({report['date'][:10]})\n",
        f"`bench/ingest.py {run}--partitions {args.partitions}` on {info['cpu']}, "
        f"{info['cores']} cores, {info['memory_gb']} GB; {info['kafka']}; Python "
        f"{info['python']}, polars {info['versions'].get('polars')}, librdkafka "
        f"{info['versions']['librdkafka']}. events/s over the steady window; split columns "
        "are % of batch (`process`) time; poll % is the window's share outside `process`.\n",
    ]
    args.out.with_suffix(".md").write_text("\n".join([*intro, *lines]) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 1 if any(report["problems"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())

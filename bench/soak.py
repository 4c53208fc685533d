"""A bounded soak: the example consumer at a fixed event rate for a fixed time, watching
throughput, batch latency and memory over time. Memory must stay flat.

setup: a LocalStack of its own (Kafka, Redis, registry) in a temporary home; the example
contract; the example consumer definition (card_spend and card_places to Redis, events
to Parquet, monitoring on) on a topic of this run, run in this process. A producer
thread sends the demo's card payments (featurestore.demo.generator: 20k skewed cards,
about 1% bad events) at --rate events/s, their event times following the wall clock.

Every --interval seconds it records: events consumed in the interval (events/s), the p99
of `process` (one batch, poll to commit) in the interval, and this process's resident
memory (VmRSS). Verdict: memory is flat when the mean RSS of the last third of the run is
within 10% of the second third's (the first third is warm-up: caches, Polars pools,
Redis key growth until the windows fill). Results: bench/results/soak.json and .md.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 2000] [--interval 10] [--quick]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from machine import describe, memory_mb  # bench/machine.py: this folder is on sys.path

from featurestore.contracts.registry.client import RegistryClient
from featurestore.demo.generator import CardPayments
from featurestore.local import LocalStack
from featurestore.online import RedisOnlineStore, connect
from featurestore.settings import Settings
from featurestore.stream import ConsumerRuntime, load_definition

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def produce(  # noqa: PLR0917 - a process's target
    kafka: str, registry: str, topic: str, rate: float, seconds: float,
    stop: Any, sent: Any,
) -> None:  # fmt: skip
    """Send the events at ``rate``; runs in a process of its own, so generating and
    serialising events never competes with the consumer for this process's GIL (in a
    thread it made every Redis reply the consumer read wait for the GIL: 10x slower)."""
    text = (ROOT / "schemas" / "card_payment.v1.avsc").read_text()
    serializer = AvroSerializer(SchemaRegistryClient({"url": registry}), text)
    context = SerializationContext(topic, MessageField.VALUE)
    now = int(time.time() * 1000)
    n = int(rate * seconds)
    events = CardPayments(n, now, now + int(seconds * 1000), shift_at=2.0).events(
        lambda p: serializer(p, context)
    )
    producer = Producer({"bootstrap.servers": kafka, "linger.ms": 20})
    began = time.monotonic()
    for i, (key, value, _) in enumerate(events):
        if stop.is_set():
            break
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        sent.value = i + 1
        lag = began + i / rate - time.monotonic()
        if lag > 0:
            time.sleep(lag)
        producer.poll(0)
    producer.flush(60)


def definition_for(topic: str, prefix: str, redis_url: str, home: Path) -> Any:
    text = (ROOT / "consumers" / "payments.toml").read_text()
    sink = f'prefix = "{prefix}"\nredis_url = "{redis_url}"'
    edits = [('topics = ["payments"]', f'topics = ["{topic}"]'),
             ('group = "fs-payments"', f'group = "fs-soak-{topic}"'),
             ("metrics_port = 9464", "metrics_port = 0"), ('prefix = "fs"', sink)]  # fmt: skip
    for old, new in edits:
        text = text.replace(old, new, 1)
    path = home / "soak.toml"
    path.write_text(text)
    return load_definition(path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings()
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="fs-soak-") as tmp:
        home = Path(tmp)
        stack = LocalStack(home / "stack", settings.cache_dir, settings.kafka_version)
        try:
            ends = stack.up(say=lambda m: print(f"  {m}"))
            assert ends.kafka
            assert ends.redis
            assert ends.registry
            topic, prefix = f"soak-{uuid.uuid4().hex[:6]}", f"soak{uuid.uuid4().hex[:6]}"
            SchemaRegistryClient({"url": ends.registry}).register_schema(
                "payments-value", Schema((ROOT / "schemas" / "card_payment.v1.avsc").read_text(),
                                         "AVRO"))  # fmt: skip
            definition = definition_for(topic, prefix, ends.redis, home)
            store = RedisOnlineStore(connect(ends.redis), definition.join_keys, prefix)
            runtime = ConsumerRuntime(definition, {"bootstrap.servers": ends.kafka},
                                      RegistryClient(ends.registry), str(home / "offline"),
                                      online=store)  # fmt: skip
            latencies: list[float] = []
            original = runtime.process

            def timed(records: Any) -> None:
                started = time.perf_counter()
                original(records)
                latencies.append(time.perf_counter() - started)

            runtime.process = timed  # type: ignore[method-assign]
            spawn = multiprocessing.get_context("spawn")
            stop, sent = spawn.Event(), spawn.Value("q", 0)
            consumer = threading.Thread(target=runtime.run, daemon=True)
            producer = spawn.Process(target=produce, args=(ends.kafka, ends.registry, topic,
                                     args.rate, seconds, stop, sent), daemon=True)  # fmt: skip
            consumer.start()
            producer.start()
            samples, began, last_in, last_lat = [], time.monotonic(), 0, 0
            while time.monotonic() - began < seconds:
                time.sleep(args.interval)
                events_in = runtime.stats.events_in
                window = latencies[last_lat:]
                p99 = statistics.quantiles(window, n=100)[98] if len(window) >= 2 else None
                sample = {"t": round(time.monotonic() - began), "events_per_s":
                          round((events_in - last_in) / args.interval), "sent": sent.value,
                          "consumed": events_in, "batches": len(window),
                          "p99_batch_ms": None if p99 is None else round(p99 * 1000, 1),
                          "rss_mb": memory_mb()["VmRSS"]}  # fmt: skip
                samples.append(sample)
                print(json.dumps(sample))
                last_in, last_lat = events_in, len(latencies)
            stop.set()
            producer.join(60)
            runtime.stop()
            consumer.join(60)
        finally:
            stack.down()
    thirds = max(1, len(samples) // 3)
    middle = [s["rss_mb"] for s in samples[thirds : 2 * thirds]] or [samples[0]["rss_mb"]]
    last = [s["rss_mb"] for s in samples[2 * thirds :]] or middle
    growth = statistics.mean(last) / statistics.mean(middle) - 1
    rates = [s["events_per_s"] for s in samples[1:]] or [0]
    return {
        "machine": describe(("polars", "confluent-kafka", "redis")),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "minutes": args.minutes, "rate": args.rate, "interval_s": args.interval,
        "samples": samples, "mean_events_per_s": round(statistics.mean(rates)),
        "rss_growth_last_vs_middle_third": round(growth, 4),
        "memory_flat": growth < 0.10,
        "p99_batch_ms_max": max((s["p99_batch_ms"] or 0) for s in samples),
    }  # fmt: skip


def _offered(report: dict[str, Any]) -> str:
    """What the producer sent against the rate asked: below it, the run soaked at the
    producer's rate (its Python serialiser), not the one asked."""
    last = report["samples"][-1] if report["samples"] else {"t": 1, "sent": 0}
    sent = round(last["sent"] / max(last["t"], 1))
    short = "" if sent >= 0.95 * report["rate"] else " (the producer's bound, not the consumer's)"
    return f"The producer sent {sent:,} events/s of the {report['rate']:,.0f} asked{short}."


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"# Soak ({report['date'][:10]})", "",
             f"`bench/soak.py --minutes {report['minutes']} --rate {report['rate']}` on "
             f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores.", "",
             f"mean {report['mean_events_per_s']:,} events/s; worst interval p99 batch "
             f"{report['p99_batch_ms_max']} ms; RSS last third vs middle third "
             f"{report['rss_growth_last_vs_middle_third']:+.1%}: memory "
             f"{'flat' if report['memory_flat'] else '**growing**'}.", "",
             _offered(report), "",
             "| t (s) | events/s | p99 batch ms | RSS MB |", "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {s['t']} | {s['events_per_s']:,} | {s['p99_batch_ms']} | {s['rss_mb']} |"
              for s in report["samples"]]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--minutes", type=float, default=10.0, help="How long (10).")
    parser.add_argument("--rate", type=float, default=2000.0, help="Events per second (2000).")
    parser.add_argument("--interval", type=float, default=10.0, help="Seconds per sample (10).")
    parser.add_argument("--quick", action="store_true", help="1 minute, 5 s samples.")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.interval = 1.0, 5.0
    # SIGTERM unwinds like Ctrl-C, so the local stack is stopped, not left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "soak.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if report["memory_flat"] else 1


if __name__ == "__main__":
    sys.exit(main())

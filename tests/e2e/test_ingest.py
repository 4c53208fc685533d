"""Streaming ingest end to end on real Kafka: the stock AvroSerializer produces card
payments (v1 and v2 producers at once) with bad events of every reason mixed in; the
consumer writes exactly the valid ones to Parquet and exactly one dead letter per bad
one, across a restart mid-stream."""

from __future__ import annotations

import json
import math
import struct
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from featurestore.contracts.registry.client import RegistryClient
from featurestore.offline import scan_events
from featurestore.stream import ConsumerDefinition, ConsumerRuntime
from featurestore.stream.dlq_tools import show
from tests.conftest import Services
from tests.integration.registry.conftest import RunningRegistry

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).parents[2] / "schemas"
NOW_MS = 1_795_300_000_000  # the consumer's clock in these tests
V1 = (SCHEMAS / "card_payment.v1.avsc").read_text()
V2 = (SCHEMAS / "card_payment.v2.avsc").read_text()


def payment(i: int, **override: Any) -> dict[str, Any]:
    event = {
        "payment_id": f"p-{i}",
        "card_id": f"card_{i % 5000:06d}",
        "amount": round(5 + (i % 997) * 1.37, 2),
        "currency": "EUR",
        "merchant_id": f"m-{i % 300}",
        "merchant_category": "5411",
        "country": "DE",
        "channel": "POS",
        "ip_address": None,
        "ts": NOW_MS - 3_600_000 + i,
    }
    event.update(override)
    return event


# Contract-breaking events the serializer still writes (valid Avro), by expected reason.
BREAKERS: list[tuple[str, dict[str, Any]]] = [
    ("CONSTRAINT_VIOLATION", {"amount": -1.0}),
    ("CONSTRAINT_VIOLATION", {"amount": math.nan}),
    ("CONSTRAINT_VIOLATION", {"currency": "eu"}),
    ("CONSTRAINT_VIOLATION", {"ip_address": "x" * 100}),
    ("MISSING_ENTITY", {"card_id": ""}),
    ("FUTURE_EVENT", {"ts": NOW_MS + 86_400_000}),
    ("LATE_EVENT", {"ts": NOW_MS - 30 * 86_400_000}),
]


class Stream:
    """Produces the test stream and remembers what each event should become."""

    def __init__(self, services: Services, registry: RunningRegistry, topic: str) -> None:
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": services.kafka_bootstrap, "linger.ms": 20})
        client = registry.client()
        conf = {"auto.register.schemas": True}
        self.v1 = AvroSerializer(client, V1, conf=conf)
        self.v2 = AvroSerializer(client, V2, conf=conf)
        self.ctx = SerializationContext(topic, MessageField.VALUE)
        self.valid: set[str] = set()
        self.bad: Counter[str] = Counter()
        # A schema unrelated to the contract: the reader cannot resolve it.
        other = json.dumps(
            {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "int"}]}
        )
        self.other_id = client.register_schema("other-value", Schema(other, "AVRO"))
        self.other = AvroSerializer(client, other, conf={"auto.register.schemas": False,
                                                          "use.latest.version": False})  # fmt: skip

    def _send(self, key: str, value: bytes | None) -> None:
        while True:
            try:
                self.producer.produce(self.topic, key=key.encode(), value=value)
                return
            except BufferError:
                self.producer.poll(0.1)

    def produce(self, start: int, count: int) -> None:
        for i in range(start, start + count):
            key = f"card_{i % 5000:06d}"
            if i % 100 == 7:  # about 1% bad, every reason in turn
                self._bad(i, key)
                continue
            serializer = self.v2 if i % 2 else self.v1
            event = payment(i)
            if serializer is self.v2:
                event["device_id"] = f"d-{i}" if i % 3 else None
                event["channel"] = "WALLET" if i % 7 == 0 else "ONLINE"
            self._send(key, serializer(event, self.ctx))
            self.valid.add(event["payment_id"])
        assert self.producer.flush(60) == 0

    def _bad(self, i: int, key: str) -> None:
        kind = (i // 100) % (len(BREAKERS) + 5)
        if kind < len(BREAKERS):
            reason, override = BREAKERS[kind]
            self._send(key, self.v1(payment(i, **override), self.ctx))
        elif kind == len(BREAKERS):
            reason = "DECODE_ERROR"
            self._send(key, b"\x07garbage that is not confluent framing")
        elif kind == len(BREAKERS) + 1:
            reason = "DECODE_ERROR"  # truncated Avro body
            self._send(key, self.v1(payment(i), self.ctx)[:12])
        elif kind == len(BREAKERS) + 2:
            reason = "UNKNOWN_SCHEMA"
            body = self.v1(payment(i), self.ctx)[5:]
            self._send(key, b"\x00" + struct.pack(">I", 987_654) + body)
        elif kind == len(BREAKERS) + 3:
            reason = "INCOMPATIBLE_SCHEMA"
            self._send(key, self.other({"x": i}, SerializationContext("other", MessageField.VALUE)))
        else:
            reason = "DECODE_ERROR"  # a null value (a tombstone) is not an event
            self._send(key, None)
        self.bad[reason] += 1


def _runtime(
    services: Services, registry: RunningRegistry, topic: str, offline: Path
) -> ConsumerRuntime:
    definition = ConsumerDefinition(
        name="payments-e2e",
        topics=[topic],
        subject="payments-value",
        group=f"fs-{topic}",
        batch_size=5000,
        batch_wait_ms=200,
    )
    return ConsumerRuntime(
        definition,
        {"bootstrap.servers": services.kafka_bootstrap},
        RegistryClient(registry.url),
        str(offline),
        clock=lambda: NOW_MS / 1000,
    )


def _run_until(runtime: ConsumerRuntime, done: Callable[[int], bool], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    runtime.run(until=lambda s: done(s.events_in) or time.monotonic() > deadline)


def _register_contract(registry: RunningRegistry) -> None:
    client = registry.client()
    client.register_schema("payments-value", Schema(V1, "AVRO"))
    client.register_schema("payments-value", Schema(V2, "AVRO"))


def test_100k_events_exact_valid_rows_and_one_dead_letter_each_across_a_restart(
    services: Services, registry: RunningRegistry, new_topic, tmp_path: Path
) -> None:
    topic = new_topic(partitions=4)
    _register_contract(registry)
    stream = Stream(services, registry, topic)
    stream.produce(0, 100_000)
    total = 100_000

    # First run stops part way (as a deploy would), the second finishes.
    first = _runtime(services, registry, topic, tmp_path)
    _run_until(first, lambda n: n >= 30_000)
    assert first.stats.events_in == first.stats.valid + first.stats.dead_total
    second = _runtime(services, registry, topic, tmp_path)
    _run_until(second, lambda n: first.stats.events_in + n >= total)

    events = scan_events(str(tmp_path), "payments-value").collect()
    assert set(events["payment_id"]) == stream.valid
    assert events.height == len(stream.valid)  # after dedupe by source offset
    assert events.schema["ts"] == pl.Datetime("ms", "UTC")
    assert events.schema["amount"] == pl.Float64
    assert {"_topic", "_partition", "_offset", "event_date"} <= set(events.columns)
    # v1 events have no device_id; v2 ones were resolved into the same frame.
    assert events["device_id"].null_count() > 0
    assert events.filter(pl.col("device_id").is_not_null()).height > 0

    letters, counts = show({"bootstrap.servers": services.kafka_bootstrap}, f"{topic}.dlq")
    assert dict(counts) == dict(stream.bad)
    sources = {(v.source) for v in show({"bootstrap.servers": services.kafka_bootstrap},
                                        f"{topic}.dlq", limit=None)[0]}  # fmt: skip
    assert len(sources) == sum(stream.bad.values())  # exactly one dead letter per bad event
    assert all(v.message for v in letters)

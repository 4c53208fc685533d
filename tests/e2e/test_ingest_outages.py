"""A dependency down mid-stream: the consumer waits and retries, never skips an offset
and never dead-letters an event because of an outage."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from featurestore.contracts.registry.client import RegistryClient
from featurestore.offline import scan_events
from featurestore.stream import ConsumerDefinition, ConsumerRuntime
from tests.conftest import Services
from tests.integration.registry.conftest import RunningRegistry

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

SCHEMAS = Path(__file__).parents[2] / "schemas"
V1 = (SCHEMAS / "card_payment.v1.avsc").read_text()
V2 = (SCHEMAS / "card_payment.v2.avsc").read_text()


def _event(i: int) -> dict[str, object]:
    return {
        "payment_id": f"p-{i}", "card_id": f"card_{i:06d}", "amount": 1.0 + i,
        "currency": "EUR", "merchant_id": "m", "merchant_category": "5411", "country": "DE",
        "channel": "POS", "ip_address": None, "ts": int(time.time() * 1000) - 1000,
    }  # fmt: skip


def send_v1(services: Services, registry: RunningRegistry, topic: str, n: int) -> Producer:
    """Register v1 and send ``n`` v1 events; returns the producer for more."""
    client = registry.client()
    client.register_schema("payments-value", Schema(V1, "AVRO"))
    ctx = SerializationContext(topic, MessageField.VALUE)
    v1 = AvroSerializer(client, V1)
    producer = Producer({"bootstrap.servers": services.kafka_bootstrap})
    for i in range(n):
        producer.produce(topic, value=v1(_event(i), ctx))
    assert producer.flush(30) == 0
    return producer


def consumer(services: Services, registry: RunningRegistry, topic: str, offline: Path,
             name: str) -> ConsumerRuntime:  # fmt: skip
    """A consumer of ``topic`` with only the offline sink, quick to give up on a call."""
    return ConsumerRuntime(
        ConsumerDefinition(name=name, topics=[topic], subject="payments-value",
                           batch_wait_ms=100),
        {"bootstrap.servers": services.kafka_bootstrap},
        RegistryClient(registry.url, timeout=1.0),
        str(offline),
    )  # fmt: skip


def test_registry_down_mid_stream_delays_but_loses_nothing(
    services: Services, registry: RunningRegistry, new_topic, tmp_path: Path
) -> None:
    topic = new_topic(partitions=1)
    producer = send_v1(services, registry, topic, 100)
    client = registry.client()
    client.register_schema("payments-value", Schema(V2, "AVRO"))
    # Serialize the v2 events now, while the registry answers; send them later.
    v2, ctx = AvroSerializer(client, V2), SerializationContext(topic, MessageField.VALUE)
    later = [v2({**_event(i), "device_id": None}, ctx) for i in range(100, 200)]

    runtime = consumer(services, registry, topic, tmp_path, "outage")
    worker = threading.Thread(target=runtime.run, kwargs={"until": lambda s: s.events_in >= 200})
    worker.start()
    deadline = time.monotonic() + 30
    while runtime.stats.events_in < 100:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    # The registry goes away; v2 events need a writer schema the consumer never fetched.
    registry.stop()
    for value in later:
        producer.produce(topic, value=value)
    assert producer.flush(30) == 0
    time.sleep(3)
    assert runtime.stats.events_in == 100  # waiting, not skipping, not dead-lettering

    registry.start()  # same port, same topic: the same registry back
    worker.join(timeout=90)
    assert not worker.is_alive()
    assert runtime.stats.events_in == 200
    assert runtime.stats.dead_total == 0
    ids = scan_events(str(tmp_path), "payments-value").collect()["payment_id"]
    assert sorted(ids) == sorted(f"p-{i}" for i in range(200))


def test_registry_down_at_start_waits_then_consumes_everything(
    services: Services, registry: RunningRegistry, new_topic, tmp_path: Path
) -> None:
    topic = new_topic(partitions=1)
    send_v1(services, registry, topic, 100)
    registry.stop()  # before the consumer starts: it cannot even read its contract
    started: list[ConsumerRuntime] = []

    def consume() -> None:
        runtime = consumer(services, registry, topic, tmp_path, "cold")
        started.append(runtime)
        runtime.run(until=lambda s: s.events_in >= 100)

    worker = threading.Thread(target=consume)
    worker.start()
    time.sleep(3)
    assert worker.is_alive()  # waiting for the registry, not crashed
    assert not started

    registry.start()
    worker.join(timeout=90)
    assert not worker.is_alive()
    assert started[0].stats.events_in == 100
    assert started[0].stats.dead_total == 0
    ids = scan_events(str(tmp_path), "payments-value").collect()["payment_id"]
    assert sorted(ids) == sorted(f"p-{i}" for i in range(100))

"""Property: whatever arrives on the topic (arbitrary bytes, framed junk, truncated
records, Avro-valid records that break the contract in any way), the consumer never
stops, and every record is accounted for exactly once: a Parquet row or a dead letter."""

from __future__ import annotations

import io
import json
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.contracts.registry.client import RegistryClient
from featurestore.offline import scan_events
from featurestore.stream import ConsumerDefinition, ConsumerRuntime
from featurestore.stream.dlq_tools import show
from tests.conftest import Services
from tests.integration.registry.conftest import RunningRegistry

pytestmark = pytest.mark.integration

V1_TEXT = (Path(__file__).parents[2] / "schemas" / "card_payment.v1.avsc").read_text()
V1 = fastavro.parse_schema(json.loads(V1_TEXT))
NOW_MS = 1_795_300_000_000

texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=80)
events = st.fixed_dictionaries(
    {
        "payment_id": texts,
        "card_id": st.one_of(st.just("card_000042"), texts),
        "amount": st.floats(allow_nan=True, allow_infinity=True),
        "currency": st.one_of(st.just("EUR"), texts),
        "merchant_id": texts,
        "merchant_category": st.one_of(st.just("5411"), texts),
        "country": st.one_of(st.just("DE"), texts),
        "channel": st.sampled_from(["POS", "ONLINE", "ATM", "MOTO"]),
        "ip_address": st.one_of(st.none(), texts),
        "ts": st.one_of(
            st.integers(NOW_MS - 3_600_000, NOW_MS),
            st.integers(-(2**62), 2**62),
        ),
    }
)


def _encode(schema_id: int, event: dict[str, Any]) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, V1, event)
    return b"\x00" + struct.pack(">I", schema_id) + body.getvalue()


@st.composite
def payloads(draw: st.DrawFn, schema_id: int) -> bytes | None:
    kind = draw(st.sampled_from(["event", "event", "bytes", "framed-junk", "prefix", "null"]))
    if kind == "event":
        return _encode(schema_id, draw(events))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "framed-junk":
        return b"\x00" + struct.pack(">I", schema_id) + draw(st.binary(max_size=64))
    if kind == "prefix":
        whole = _encode(schema_id, draw(events))
        return whole[: draw(st.integers(0, len(whole) - 1))]
    return None


@pytest.fixture(scope="module")
def contract_registry(services: Services) -> Any:
    registry = RunningRegistry(services.kafka_bootstrap, f"_schemas-fuzz-{uuid.uuid4().hex[:8]}")
    registry.start()
    schema_id = registry.client().register_schema("payments-value", Schema(V1_TEXT, "AVRO"))
    yield registry, schema_id
    registry.stop()


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_every_record_is_a_row_or_a_dead_letter(
    services: Services, contract_registry: Any, tmp_path: Path, data: st.DataObject
) -> None:
    registry, schema_id = contract_registry
    values = data.draw(st.lists(payloads(schema_id), min_size=1, max_size=60))
    topic = f"fuzz-{uuid.uuid4().hex[:10]}"
    kafka = {"bootstrap.servers": services.kafka_bootstrap}
    admin = AdminClient(kafka)  # kept alive until the topic exists
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    producer = Producer(kafka)
    for i, value in enumerate(values):
        producer.produce(topic, key=str(i).encode(), value=value)
    assert producer.flush(30) == 0

    offline = tmp_path / uuid.uuid4().hex
    runtime = ConsumerRuntime(
        ConsumerDefinition(name="fuzz", topics=[topic], subject="payments-value",
                           batch_size=25, batch_wait_ms=100),
        kafka,
        RegistryClient(registry.url),
        str(offline),
        clock=lambda: NOW_MS / 1000,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    stats = runtime.run(until=lambda s: s.events_in >= len(values) or time.monotonic() > deadline)

    assert stats.events_in == len(values)
    assert stats.valid + stats.dead_total == len(values)
    rows = scan_events(str(offline), "payments-value").collect().height if stats.valid else 0
    assert rows == stats.valid
    _, counts = show(kafka, f"{topic}.dlq", timeout=5)
    assert sum(counts.values()) == stats.dead_total
    assert dict(counts) == dict(stats.dead_lettered)

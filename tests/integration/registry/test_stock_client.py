"""The stock confluent-kafka registry client, AvroSerializer and AvroDeserializer work
against our registry unmodified, through a real Kafka topic."""

from __future__ import annotations

import json
import struct
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.conftest import Services
from tests.integration.registry.conftest import RunningRegistry

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).parents[3] / "schemas"


def payment(i: int) -> dict[str, object]:
    return {
        "payment_id": f"p-{i}",
        "card_id": f"card_{i:06d}",
        "amount": 12.5 + i,
        "currency": "EUR",
        "merchant_id": "m-1",
        "merchant_category": "5411",
        "country": "DE",
        "channel": "POS",
        "ip_address": None,
        "ts": 1_795_000_000_000 + i,
    }


def test_serializer_registers_and_deserializer_reads_back_through_kafka(
    registry: RunningRegistry, services: Services, new_topic
) -> None:
    topic = new_topic(partitions=1)
    client = registry.client()
    v1 = (SCHEMAS / "card_payment.v1.avsc").read_text()
    serializer = AvroSerializer(client, v1)  # auto.register.schemas: the default
    deserializer = AvroDeserializer(client)
    producer = Producer({"bootstrap.servers": services.kafka_bootstrap})
    ctx = SerializationContext(topic, MessageField.VALUE)
    for i in range(5):
        producer.produce(topic, key=f"card_{i:06d}", value=serializer(payment(i), ctx))
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": services.kafka_bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    got = []
    while len(got) < 5:
        msgs = consumer.consume(5, timeout=10)
        assert msgs, "no records within 10s"
        got.extend(msgs)
    consumer.close()

    registered = client.get_latest_version(f"{topic}-value")
    assert registered.version == 1
    for i, msg in enumerate(got):
        raw = msg.value()
        # Confluent framing: magic byte 0, then the big-endian schema id.
        assert raw[0] == 0
        assert struct.unpack(">I", raw[1:5])[0] == registered.schema_id
        # A fresh client reads the writer schema by id from the registry.
        fresh = AvroDeserializer(registry.client())
        expected = payment(i)
        # timestamp-millis comes back as an aware datetime, as fastavro reads it.
        expected["ts"] = datetime.fromtimestamp(int(expected["ts"]) / 1000, tz=UTC)  # type: ignore[call-overload]
        assert fresh(raw, ctx) == deserializer(raw, ctx) == expected


def test_same_schema_gets_the_same_id_everywhere(registry: RunningRegistry) -> None:
    client = registry.client()
    text = (SCHEMAS / "card_payment.v1.avsc").read_text()
    first = client.register_schema("a-value", Schema(text, "AVRO"))
    # Registered twice, reformatted, and under another subject: one id, one version.
    again = registry.client().register_schema("a-value", Schema(text, "AVRO"))
    reformatted = json.dumps(json.loads(text), indent=None, sort_keys=True)
    other = registry.client().register_schema("b-value", Schema(reformatted, "AVRO"))
    assert first == again == other
    assert client.get_versions("a-value") == [1]
    assert sorted(client.get_subjects()) == ["a-value", "b-value"]

    found = client.lookup_schema("b-value", Schema(text, "AVRO"))
    assert (found.schema_id, found.version, found.subject) == (first, 1, "b-value")
    assert (
        registry.client().get_schema(first).schema_str
        == client.get_version("a-value", 1).schema.schema_str
    )
    versions = client.get_schema_versions(first)
    assert sorted((v.subject, v.version) for v in versions) == [("a-value", 1), ("b-value", 1)]
    assert sorted(client.get_subjects_by_schema_id(first)) == ["a-value", "b-value"]
    assert client.get_schema_types() == ["AVRO"]


def test_compatibility_config_and_deletes_through_the_stock_client(
    registry: RunningRegistry,
) -> None:
    client = registry.client()
    v1 = (SCHEMAS / "card_payment.v1.avsc").read_text()
    v2 = (SCHEMAS / "card_payment.v2.avsc").read_text()
    v3 = (SCHEMAS / "card_payment.v3.avsc").read_text()
    assert client.get_compatibility() == "BACKWARD"
    client.register_schema("pay-value", Schema(v1, "AVRO"))
    assert client.test_compatibility("pay-value", Schema(v2, "AVRO"))
    assert not client.test_compatibility("pay-value", Schema(v3, "AVRO"))
    v2_id = client.register_schema("pay-value", Schema(v2, "AVRO"))

    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema("pay-value", Schema(v3, "AVRO"))
    assert refused.value.http_status_code == 409
    assert "risk_score" in refused.value.error_message
    assert "amount" in refused.value.error_message

    # NONE for this subject only: v3 goes in, other subjects keep the global level.
    client.set_compatibility("pay-value", "NONE")
    assert client.get_compatibility("pay-value") == "NONE"
    client.register_schema("pay-value", Schema(v3, "AVRO"))
    assert client.get_versions("pay-value") == [1, 2, 3]

    # Soft delete hides a version; a permanent delete needs the soft one first.
    with pytest.raises(SchemaRegistryError) as early:
        client.delete_version("pay-value", 3, permanent=True)
    assert early.value.error_code == 40407
    assert client.delete_version("pay-value", 3) == 3
    assert client.get_versions("pay-value") == [1, 2]
    assert client.get_latest_version("pay-value").schema_id == v2_id
    assert client.delete_version("pay-value", 3, permanent=True) == 3

    assert client.delete_subject("pay-value") == [1, 2]
    with pytest.raises(SchemaRegistryError) as gone:
        registry.client().get_latest_version("pay-value")  # fresh: the stock client caches
    assert gone.value.error_code == 40401
    assert client.delete_subject("pay-value", permanent=True) == [1, 2]
    with pytest.raises(SchemaRegistryError) as purged:
        registry.client().get_schema(v2_id)
    assert purged.value.error_code == 40403

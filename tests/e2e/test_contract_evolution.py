"""A compatible contract change, end to end as a producer team makes it: v1 events, v2
(an optional ``device_id``, a new enum symbol) registered, the consumer restarted on
the new latest contract, v2 events. The offline store then holds files of both
versions; training sets and a backfill of a view over the new field read both periods
(the field is null before v2). A later change that the store could not read as one
frame (a number become text) is refused when the consumer starts on it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from featurestore.contracts.registry.client import RegistryClient
from featurestore.errors import ConfigError
from featurestore.features.definitions import FeatureView
from featurestore.offline import scan_events
from featurestore.offline.history import get_historical_features
from featurestore.online import RedisOnlineStore, connect
from featurestore.stream import ConsumerDefinition, ConsumerRuntime
from featurestore.stream.backfill import backfill
from tests.conftest import Services
from tests.integration.registry.conftest import RunningRegistry

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).parents[2] / "schemas"
V1 = (SCHEMAS / "card_payment.v1.avsc").read_text()
V2 = (SCHEMAS / "card_payment.v2.avsc").read_text()
CARDS = [f"card_{i:06d}" for i in range(4)]
VIEW = FeatureView.model_validate({
    "name": "card_devices", "source": "payments-value", "entity": "card", "owner": "o",
    "aggregations": [
        {"column": "device_id", "functions": ["count", "distinct", "last"], "windows": ["3h/5m"]},
        {"column": "amount", "functions": ["count", "sum"], "windows": ["3h/5m"]},
    ],
})  # fmt: skip


def _produce(services: Services, registry: RunningRegistry, topic: str, schema: str,
             events: list[dict[str, Any]]) -> None:  # fmt: skip
    client = registry.client()
    client.register_schema("payments-value", Schema(schema, "AVRO"))
    serialize = AvroSerializer(client, schema)
    ctx = SerializationContext(topic, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": services.kafka_bootstrap})
    for event in events:
        producer.produce(topic, key=event["card_id"].encode(), value=serialize(event, ctx))
    assert producer.flush(30) == 0


def _consume(services: Services, registry: RunningRegistry, topic: str, offline: Path,
             n: int) -> int:  # fmt: skip
    """A consumer process (group ``evolution``) on the latest contract, until ``n`` more
    events; returns the contract version it enforced."""
    runtime = ConsumerRuntime(
        ConsumerDefinition(name="evolution", topics=[topic], subject="payments-value",
                           batch_wait_ms=100),
        {"bootstrap.servers": services.kafka_bootstrap}, RegistryClient(registry.url),
        str(offline),
    )  # fmt: skip
    deadline = time.monotonic() + 60
    runtime.run(until=lambda s: s.events_in >= n or time.monotonic() > deadline)
    assert runtime.stats.events_in == n
    assert runtime.stats.dead_total == 0
    return runtime.contract_version


def test_training_sets_and_backfills_read_both_contract_versions(
    services: Services, registry: RunningRegistry, new_topic: Any, redis_prefix: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    topic = new_topic(partitions=1)
    start = (int(time.time() * 1000) - 2 * 3_600_000) // 60_000 * 60_000
    event = {"currency": "EUR", "merchant_id": "m", "merchant_category": "5411",
             "country": "DE", "channel": "POS", "ip_address": None}  # fmt: skip
    v1 = [{**event, "payment_id": f"p{i}", "card_id": CARDS[i % 4], "amount": 1.0 + i,
           "ts": start + i * 60_000} for i in range(40)]  # fmt: skip
    v2 = [{**event, "payment_id": f"p{i}", "card_id": CARDS[i % 4], "amount": 1.0 + i,
           "channel": "WALLET", "device_id": f"dev{i % 3}", "ts": start + i * 60_000}
          for i in range(40, 80)]  # fmt: skip
    offline = tmp_path / "offline"
    _produce(services, registry, topic, V1, v1)
    assert _consume(services, registry, topic, offline, 40) == 1
    _produce(services, registry, topic, V2, v2)  # BACKWARD-compatible: registered
    assert _consume(services, registry, topic, offline, 40) == 2  # restarted on v2

    events = scan_events(str(offline), "payments-value").collect().sort("_offset")
    assert events.height == 80
    assert events["device_id"].to_list() == [None] * 40 + [e["device_id"] for e in v2]
    assert events["channel"].to_list() == ["POS"] * 40 + ["WALLET"] * 40

    at = start + 80 * 60_000
    rows = pl.DataFrame({"card_id": CARDS, "event_timestamp": [at] * 4})
    refs = [f"card_devices:{f.name}" for f in VIEW.features]
    training = get_historical_features(rows, refs, views={VIEW.name: VIEW},
                                       join_keys={"card": ["card_id"]},
                                       offline_root=str(offline), event_time="ts")  # fmt: skip
    for card, row in zip(CARDS, training.iter_rows(named=True), strict=True):
        mine = [e for e in v1 + v2 if e["card_id"] == card]
        devices = [e["device_id"] for e in v2 if e["card_id"] == card]
        assert row["amount_count_3h"] == len(mine)  # both periods
        assert row["amount_sum_3h"] == pytest.approx(sum(e["amount"] for e in mine))
        assert row["device_id_count_3h"] == len(devices)  # null before v2
        assert row["device_id_distinct_3h"] == len(set(devices))
        assert row["device_id_last_3h"] == devices[-1]

    store = RedisOnlineStore(connect(services.redis_url), {"card": ["card_id"]},
                             redis_prefix.rstrip(":"))  # fmt: skip
    report = backfill(store, VIEW, offline_root=str(offline), event_time="ts")
    assert report.events == 80
    online = store.read(VIEW, rows.select("card_id"), at, [f.name for f in VIEW.features])
    assert online.equals(training.select(online.columns))

    # A change the offline store cannot read as one frame (a number become text),
    # registered where compatibility is off: the consumer refuses it before any write.
    client = registry.client()
    client.set_compatibility(subject_name="payments-value", level="NONE")
    v3 = json.loads(V2)
    for field in v3["fields"]:
        if field["name"] == "amount":
            field["type"] = "string"
            field.pop("constraints", None)  # a number's
    client.register_schema("payments-value", Schema(json.dumps(v3), "AVRO"))
    with pytest.raises(
        ConfigError,
        match=r"column 'amount' is Float64 in .*parquet and String in contract version 3",
    ):
        ConsumerRuntime(ConsumerDefinition(name="evolution", topics=[topic],
                                           subject="payments-value"),
                        {"bootstrap.servers": services.kafka_bootstrap},
                        RegistryClient(registry.url), str(offline))  # fmt: skip

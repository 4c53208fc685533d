"""Redis memory limits under a consumer with feature views, on a redis-server of the
test's own: a Redis that may evict the store's keys is refused at start (unless the
definition allows it), and a Redis that fills up under ``noeviction`` makes the consumer
wait, alert the view's owner and lose nothing, while lookups keep answering."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka.schema_registry import Schema

from featurestore.contracts.registry.client import RegistryClient
from featurestore.errors import ConfigError
from featurestore.local.process import free_port, stop
from featurestore.local.redis import RedisServer, wait_for_redis
from featurestore.monitor.alerts import read_alerts
from featurestore.online import RedisOnlineStore, connect
from featurestore.stream import ConsumerRuntime
from tests.conftest import Services
from tests.e2e.outcomes import Outcome, assert_same_outcome, reference_run, started_consumer
from tests.e2e.test_features import MINUTE, PARTITIONS, definition, produce, stream, values_at
from tests.e2e.test_groups import drain, until
from tests.integration.registry.conftest import RunningRegistry

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

V1 = (Path(__file__).parents[2] / "schemas" / "card_payment.v1.avsc").read_text()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test alone (its memory settings change)."""
    server = RedisServer(tmp_path / "redis", free_port())
    record = server.start()
    try:
        wait_for_redis(server.url, record)
        yield server.url
    finally:
        stop(record)


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru"])
def test_a_redis_that_may_evict_is_refused_unless_allowed(
    own_redis: str, registry: RunningRegistry, services: Services, policy: str
) -> None:
    registry.client().register_schema("payments-value", Schema(V1, "AVRO"))
    admin = redis.Redis.from_url(own_redis)
    admin.config_set("maxmemory", 64 * 1024 * 1024)
    admin.config_set("maxmemory-policy", policy)
    d = definition("payments-evict", "fs-evict", "evict")
    kafka = {"bootstrap.servers": services.kafka_bootstrap}

    def start(allow: bool) -> ConsumerRuntime:
        online = d.sinks.online.model_copy(update={"allow_eviction": allow})
        sinks = d.sinks.model_copy(update={"online": online})
        store = RedisOnlineStore(connect(own_redis), d.join_keys, "evict")
        return ConsumerRuntime(d.model_copy(update={"sinks": sinks}), kafka,
                               RegistryClient(registry.url), None, online=store)  # fmt: skip

    with pytest.raises(ConfigError, match=f"maxmemory-policy {policy}.*allow_eviction"):
        start(allow=False)
    assert start(allow=True).views  # accepted, with a warning, when the definition says so
    admin.config_set("maxmemory-policy", "noeviction")
    assert start(allow=False).views


def test_a_full_redis_makes_the_consumer_wait_and_alert_and_lose_nothing(
    services: Services, registry: RunningRegistry, new_topic: Any, own_redis: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    topic = new_topic(partitions=PARTITIONS)
    events = stream(4_000, seed=47, end_ms=int(time.time() * 1000) - MINUTE, cards=150)
    first, second = events[:2_000], events[2_000:]
    produce(services, registry, topic, first)
    kafka = {"bootstrap.servers": services.kafka_bootstrap}
    d, store, runtime, thread = started_consumer(
        kafka,
        own_redis,
        registry.url,
        topic,
        group=f"fs-full-{topic}",
        prefix="full",
        offline=tmp_path / "offline",
    )
    until(lambda: runtime.stats.events_in >= len(first), lambda: runtime.stats)

    admin = redis.Redis.from_url(own_redis)
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", used // 2)  # full: every write is refused (noeviction)
    during = runtime.stats.events_in
    produce(services, registry, topic, second)
    time.sleep(5)
    assert runtime.stats.events_in - during <= 300  # at most the batch in hand went on
    assert thread.is_alive()
    assert runtime.watch is not None
    firing = [a for a in runtime.watch.alerts.firing.values() if a.kind == "online_store_full"]
    assert [(a.subject, a.owner) for a in firing] == [
        ("card_activity v3", "fraud-team@example.com")
    ]
    cards = sorted({e["card_id"] for _, e in events})
    newest = max(e["ts"] for _, e in first)
    assert values_at(store, d, cards, newest).height == len(cards)  # reads still answer

    admin.config_set("maxmemory", 0)  # memory freed
    drain(services, topic, d.group_id)
    runtime.stop()
    thread.join(60)
    assert not thread.is_alive()
    assert not [a for a in runtime.watch.alerts.firing.values() if a.kind == "online_store_full"]
    sent = [a for a in read_alerts(kafka) if a["kind"] == "online_store_full"
            and a["source"] == f"consumer {d.name}"]  # fmt: skip
    assert [a["status"] for a in sent] == ["firing", "resolved"]

    # The same stream, never interrupted, into other keys, files and topic.
    _, reference, _ = reference_run(kafka, services.redis_url, registry.url, topic,
                                    name="reference", prefix=f"reference-{topic}",
                                    home=tmp_path, events=len(events), batch_size=300)  # fmt: skip
    assert_same_outcome(kafka, d, events, Outcome(store, tmp_path / "offline", f"{topic}.dlq"),
                        reference)  # fmt: skip

"""Redis, then the Kafka broker, restarted under a running consumer: it backs off and
retries, skips no offset, doubles nothing, and ends with the same online values, offline
events (after dedupe) and dead letters as a run that never saw an outage.

Both services are dedicated to this test (a broker and a redis-server of their own, in
temporary homes), so stopping them disturbs no other test; the registry stays on the
session's broker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from featurestore.local import KafkaDistribution, KafkaServer, wait_for_kafka
from featurestore.local.process import ProcessRecord, free_port, stop
from featurestore.local.redis import RedisServer, wait_for_redis
from featurestore.settings import Settings
from tests.conftest import Services
from tests.e2e.outcomes import Outcome, assert_same_outcome, reference_run, started_consumer
from tests.e2e.test_features import MINUTE, PARTITIONS, produce, stream
from tests.e2e.test_groups import drain, until
from tests.integration.registry.conftest import RunningRegistry

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


class Restartable:
    """A dedicated service that can be stopped and started again on its own data."""

    def __init__(self, start: Any, wait: Any) -> None:
        self._start, self._wait = start, wait
        self.record: ProcessRecord | None = None
        self.up()

    def up(self) -> None:
        self.record = self._start()
        self._wait(self.record)

    def down(self) -> None:
        assert self.record is not None
        stop(self.record)
        self.record = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[str, Restartable]]:
    settings = Settings()
    libs = KafkaDistribution(settings.kafka_version, settings.cache_dir).ensure()
    server = KafkaServer(tmp_path / "kafka", free_port(), free_port(), heap="384M")
    service = Restartable(lambda: server.start(libs),
                          lambda record: wait_for_kafka(server.bootstrap, record))  # fmt: skip
    try:
        yield server.bootstrap, service
    finally:
        if service.record is not None:
            stop(service.record)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[str, Restartable]]:
    server = RedisServer(tmp_path / "redis", free_port())
    service = Restartable(server.start, lambda record: wait_for_redis(server.url, record))
    try:
        yield server.url, service
    finally:
        if service.record is not None:
            stop(service.record)


def test_redis_then_the_broker_restarted_mid_stream_lose_and_double_nothing(
    services: Services, registry: RunningRegistry, broker: tuple[str, Restartable],
    redis_server: tuple[str, Restartable], tmp_path: Path,
) -> None:  # fmt: skip
    bootstrap, kafka_service = broker
    redis_url, redis_service = redis_server
    kafka = {"bootstrap.servers": bootstrap}
    on_broker = Services(bootstrap, redis_url, "dedicated")
    topic = "payments-restarts"
    events = stream(9_000, seed=43, end_ms=int(time.time() * 1000) - MINUTE, cards=150)
    first, second = events[:6_000], events[6_000:]
    admin = AdminClient(kafka)
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS)])[topic].result(30)
    produce(on_broker, registry, topic, first)

    d, store, runtime, thread = started_consumer(
        kafka,
        redis_url,
        registry.url,
        topic,
        group="fs-restarts",
        prefix="restarts",
        offline=tmp_path / "offline",
    )
    until(lambda: runtime.stats.events_in >= 1_200, lambda: runtime.stats)

    redis_service.down()  # Redis first
    during = runtime.stats.events_in
    time.sleep(4)
    assert runtime.stats.events_in - during <= 300  # at most the batch in hand went on
    redis_service.up()
    until(lambda: runtime.stats.events_in >= during + 1_200, lambda: runtime.stats)

    kafka_service.down()  # then the broker
    during = runtime.stats.events_in
    time.sleep(4)
    assert runtime.stats.events_in - during <= 300
    assert thread.is_alive()
    kafka_service.up()
    produce(on_broker, registry, topic, second)  # more events once the broker is back
    drain(on_broker, topic, d.group_id)
    runtime.stop()
    thread.join(60)
    assert not thread.is_alive()
    assert runtime.stats.events_in >= len(events)

    # The same stream, never interrupted, into other keys, files and topic.
    _, reference, _ = reference_run(kafka, redis_url, registry.url, topic, name="reference",
                                    prefix="reference", home=tmp_path, events=len(events),
                                    batch_size=300)  # fmt: skip
    letters = assert_same_outcome(
        kafka, d, events, Outcome(store, tmp_path / "offline", f"{topic}.dlq"), reference
    )
    assert letters  # the stream holds late events

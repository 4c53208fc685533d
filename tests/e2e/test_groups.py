"""Three consumers in one group, started and stopped mid-stream (each start and stop a
rebalance), end in the same state as one consumer alone: the same online values, the
same offline events (after dedupe) and the same dead letters."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from featurestore.contracts.registry.client import RegistryClient
from featurestore.online import RedisOnlineStore, connect
from featurestore.stream import ConsumerRuntime
from tests.conftest import Services
from tests.e2e.outcomes import Outcome, assert_same_outcome
from tests.e2e.test_features import PARTITIONS, _lag, definition, produce, stream
from tests.integration.registry.conftest import RunningRegistry

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
MINUTE = 60_000


class Member:
    """One consumer of a group, running in a thread until stopped."""

    def __init__(self, d: Any, services: Services, registry: RunningRegistry, offline: Path,
                 store: RedisOnlineStore) -> None:  # fmt: skip
        self.runtime = ConsumerRuntime(d, {"bootstrap.servers": services.kafka_bootstrap},
                                       RegistryClient(registry.url), str(offline),
                                       online=store)  # fmt: skip
        self.thread = threading.Thread(target=self.runtime.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.runtime.stop()
        self.thread.join(60)
        assert not self.thread.is_alive()


def until(condition: Callable[[], bool], what: Callable[[], object], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out: {what()}"
        time.sleep(0.1)


def members_with_partitions(services: Services, group: str) -> int:
    admin = AdminClient({"bootstrap.servers": services.kafka_bootstrap})
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return sum(1 for m in described.members if m.assignment.topic_partitions)


def drain(services: Services, topic: str, group: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while _lag(services, topic, group) > 0:
        assert time.monotonic() < deadline, "the group did not catch up"
        time.sleep(0.3)


def test_three_members_with_rebalances_equal_one_consumer(
    services: Services, registry: RunningRegistry, new_topic: Any, redis_prefix: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    topic = new_topic(partitions=PARTITIONS)
    end = int(time.time() * 1000) - MINUTE
    events = stream(12_000, seed=31, end_ms=end, cards=200)
    thirds = [events[:4_000], events[4_000:8_000], events[8_000:]]

    def setup(name: str) -> tuple[Any, RedisOnlineStore, Path]:
        prefix = f"{redis_prefix}{name}"
        d = definition(topic, f"fs-{name}-{topic}", prefix, batch_size=400)
        d = d.model_copy(update={"dlq_topic": f"{topic}.dlq.{name}"})
        return d, RedisOnlineStore(connect(services.redis_url), d.join_keys, prefix), \
            tmp_path / f"offline-{name}"  # fmt: skip

    # The group: events arrive in thirds, so every member gets some.
    d, grouped, group_offline = setup("group")
    produce(services, registry, topic, thirds[0])
    a = Member(d, services, registry, group_offline, grouped)
    until(lambda: a.runtime.stats.events_in > 0, lambda: a.runtime.stats)
    b = Member(d, services, registry, group_offline, grouped)
    c = Member(d, services, registry, group_offline, grouped)
    until(
        lambda: members_with_partitions(services, d.group_id) == 3,
        lambda: members_with_partitions(services, d.group_id),
    )  # the rebalance is done
    produce(services, registry, topic, thirds[1])
    until(lambda: b.runtime.stats.events_in > 0 and c.runtime.stats.events_in > 0,
          lambda: [m.runtime.stats.events_in for m in (a, b, c)])  # fmt: skip
    b.stop()  # leaves mid-stream: its partitions move to a and c
    produce(services, registry, topic, thirds[2])
    drain(services, topic, d.group_id)
    a.stop()
    c.stop()
    shares = [m.runtime.stats.events_in for m in (a, b, c)]
    assert sum(shares) >= len(events)
    assert all(shares), shares  # every member took part

    # Then the same topic read by one consumer alone.
    solo, alone, alone_offline = setup("alone")
    member = Member(solo, services, registry, alone_offline, alone)
    drain(services, topic, solo.group_id)
    member.stop()

    kafka = {"bootstrap.servers": services.kafka_bootstrap}
    letters = assert_same_outcome(
        kafka, d, events, Outcome(grouped, group_offline, f"{topic}.dlq.group"),
        Outcome(alone, alone_offline, f"{topic}.dlq.alone"),
    )  # fmt: skip
    assert letters  # the stream holds late events

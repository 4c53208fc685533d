"""Redis stopped mid-stream under a consumer with feature views, then started again on
its own data: the consumer backs off and retries, skips no offset, and the final
online values equal those of a run that never saw the outage."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from featurestore.contracts.registry.client import RegistryClient
from featurestore.local.process import free_port, stop
from featurestore.local.redis import RedisServer, wait_for_redis
from featurestore.online import RedisOnlineStore, connect
from featurestore.stream import ConsumerRuntime
from tests.conftest import Services
from tests.e2e.test_features import MINUTE, definition, produce, stream, values_at
from tests.e2e.test_groups import drain
from tests.frames import assert_close
from tests.integration.registry.conftest import RunningRegistry

pytestmark = pytest.mark.integration


def test_redis_down_mid_stream_then_back_loses_and_doubles_nothing(
    services: Services, registry: RunningRegistry, new_topic: Any, redis_prefix: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    topic = new_topic(partitions=3)
    end = int(time.time() * 1000) - MINUTE
    events = stream(9_000, seed=41, end_ms=end, cards=150)
    produce(services, registry, topic, events)
    kafka = {"bootstrap.servers": services.kafka_bootstrap}

    redis = RedisServer(tmp_path / "redis", free_port())
    record = redis.start()
    try:
        wait_for_redis(redis.url, record)
        d = definition(topic, f"fs-outage-{topic}", "outage", batch_size=300)
        store = RedisOnlineStore(connect(redis.url, socket_timeout=2), d.join_keys, "outage")
        runtime = ConsumerRuntime(d, kafka, RegistryClient(registry.url),
                                  str(tmp_path / "offline"), online=store)  # fmt: skip
        thread = threading.Thread(target=runtime.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while runtime.stats.events_in < 1_500:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stop(record)  # mid-stream
        during = runtime.stats.events_in
        time.sleep(6)
        assert runtime.stats.events_in - during <= 300  # at most the batch in hand went on
        record = redis.start()  # the same data dir: the AOF comes back
        wait_for_redis(redis.url, record)
        drain(services, topic, d.group_id)
        runtime.stop()
        thread.join(60)
        assert runtime.stats.events_in >= len(events)

        reference_prefix = redis_prefix + "reference"
        ref = definition(topic, f"fs-reference-{topic}", reference_prefix, batch_size=300)
        reference = RedisOnlineStore(connect(services.redis_url), ref.join_keys,
                                     reference_prefix)  # fmt: skip
        clean = ConsumerRuntime(ref, kafka, RegistryClient(registry.url),
                                str(tmp_path / "offline-reference"), online=reference)  # fmt: skip
        clean.run(until=lambda s: s.events_in >= len(events))

        newest = max(e["ts"] for _, e in events)
        cards = sorted({e["card_id"] for _, e in events})
        for at in (newest, newest + 5 * MINUTE):
            assert_close(values_at(store, d, cards, at), values_at(reference, ref, cards, at))
    finally:
        stop(record)

"""A new view version handed over from its backfill to the stream, on real Kafka and
Redis: the consumer computes v1; v2 is backfilled from the offline events; more events
arrive while v2 is only backfilled (the gap); v2 goes into shadow and the consumer takes
it over from its backfill. The final v2 values equal those of a consumer that computed
v2 from the first event, for every card, at several times."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from featurestore.contracts.registry.client import RegistryClient
from featurestore.online import RedisOnlineStore, connect
from featurestore.online.lifecycle import Lifecycle
from featurestore.stream import ConsumerDefinition, ConsumerRuntime
from tests.conftest import Services
from tests.e2e.test_features import MINUTE, PARTITIONS, VIEWS, produce, stream
from tests.frames import assert_close
from tests.integration.registry.conftest import RunningRegistry

pytestmark = pytest.mark.integration

V1 = """
[[views]]
name = "card_activity"
version = 1
source = "payments-value"
entity = "card"
owner = "fraud-team@example.com"
allowed_lateness = "10m"

[[views.aggregations]]
column = "amount"
functions = ["count", "sum"]
windows = ["10m/1m"]
"""
V2 = VIEWS.replace("version = 3", "version = 2")


def definition(topic: str, group: str, prefix: str, views: str) -> ConsumerDefinition:
    raw = tomllib.loads(views)
    return ConsumerDefinition.model_validate(
        {"name": group, "topics": [topic], "subject": "payments-value", "group": group,
         "batch_size": 700, "batch_wait_ms": 200, "sinks": {"online": {"prefix": prefix}},
         **raw}
    )  # fmt: skip


def consume(  # noqa: PLR0917
    d: ConsumerDefinition, services: Services, registry: RunningRegistry, offline: Path,
    store: RedisOnlineStore, n: int,
) -> None:  # fmt: skip
    runtime = ConsumerRuntime(d, {"bootstrap.servers": services.kafka_bootstrap},
                              RegistryClient(registry.url), str(offline), online=store)  # fmt: skip
    deadline = time.monotonic() + 120
    runtime.run(until=lambda s: s.events_in >= n or time.monotonic() > deadline)
    assert runtime.stats.events_in == n


def test_backfill_then_stream_hand_over_equals_a_from_scratch_run(
    services: Services, registry: RunningRegistry, new_topic: Any, redis_prefix: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    topic = new_topic(partitions=PARTITIONS)
    end = int(time.time() * 1000) - MINUTE
    events = stream(9_000, seed=21, end_ms=end, cards=120)
    # The gap is recent: inside the 1h windows of the times compared.
    first, gap, rest = events[:6_000], events[6_000:8_500], events[8_500:]
    prefix = redis_prefix + "live"
    d = definition(topic, f"fs-live-{topic}", prefix, V2 + V1)
    v2 = next(v for v in d.views if v.version == 2)
    store = RedisOnlineStore(connect(services.redis_url), d.join_keys, prefix)
    lifecycle = Lifecycle(store.client, prefix)
    lifecycle.ensure_active("card_activity", 1, "test")  # v1 serves; v2 is new
    offline = tmp_path / "offline-live"

    produce(services, registry, topic, first)
    consume(d, services, registry, offline, store, len(first))
    assert not lifecycle.has_online_state("card_activity", 2)  # only v1 is computed

    folder = tmp_path / "definitions"
    folder.mkdir()
    (folder / "payments.toml").write_text(
        f'name = "live"\ntopics = ["{topic}"]\nsubject = "payments-value"\n'
        f'[sinks.online]\nprefix = "{prefix}"\n' + V2 + V1
    )
    env = {**os.environ, "FEATURESTORE_REDIS_URL": services.redis_url,
           "FEATURESTORE_REGISTRY_URL": registry.url}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "featurestore.cli", "backfill", "card_activity", "--version",
         "2", "--definitions", str(folder), "--offline-path", str(offline)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "backfilled card_activity v2" in done.stderr
    through = lifecycle.version_info("card_activity", 2)["through"]
    assert set(through) == {(topic, p) for p in range(PARTITIONS)}

    produce(services, registry, topic, gap)  # v2 only backfilled: these are the gap
    consume(d, services, registry, offline, store, len(gap))
    lifecycle.shadow("card_activity", 2, "test")
    produce(services, registry, topic, rest)
    consume(d, services, registry, offline, store, len(rest))
    marks = lifecycle.version_info("card_activity", 2)
    assert set(marks["live"]) == {(topic, p) for p in range(PARTITIONS)}
    assert all(marks["live"][p] > marks["through"][p] + 1 for p in marks["live"])

    scratch_prefix = redis_prefix + "scratch"
    scratch = definition(topic, f"fs-scratch-{topic}", scratch_prefix, V2)
    scratch_store = RedisOnlineStore(connect(services.redis_url), scratch.join_keys,
                                     scratch_prefix)  # fmt: skip
    consume(scratch, services, registry, tmp_path / "offline-scratch", scratch_store, len(events))

    cards = sorted({e["card_id"] for _, e in events})
    features = [f.name for f in v2.features]
    newest = max(e["ts"] for _, e in events)
    for at in (newest, newest + 7 * MINUTE + 5, newest + 50 * MINUTE):
        rows = pl.DataFrame({"card_id": cards})
        handed_over = store.read(v2, rows, at, features)
        from_scratch = scratch_store.read(v2, rows, at, features)
        assert_close(handed_over, from_scratch)
    assert handed_over["amount_count_1h"].sum() > 0

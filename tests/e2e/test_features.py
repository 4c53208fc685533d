"""Windowed features end to end on real Kafka and Redis.

Parity: a random stream (out of order, late beyond retention, three partitions) goes
through the real consumer; then for random cards and times the online value read from
Redis equals `get_historical_features` recomputed from the offline Parquet, for every
feature (floats within 1e-9 relative), and the events the watermark rule dead-letters
are exactly the ones it should.

Crash: `featurestore run` is killed with SIGKILL mid-stream and started again; the final
online values equal those of an uninterrupted run of the same stream.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from featurestore.contracts.registry.client import RegistryClient
from featurestore.offline.history import get_historical_features
from featurestore.online import RedisOnlineStore, connect
from featurestore.project import FeatureStore
from featurestore.stream import ConsumerDefinition, ConsumerRuntime
from featurestore.stream.dlq_tools import show
from tests.conftest import Services
from tests.frames import assert_close
from tests.integration.registry.conftest import RunningRegistry

pytestmark = pytest.mark.integration

V1 = (Path(__file__).parents[2] / "schemas" / "card_payment.v1.avsc").read_text()
MINUTE = 60_000
PARTITIONS = 3
RETENTION = 70 * MINUTE  # longest window 1h + allowed lateness 10m
VIEWS = """
[[entities]]
name = "card"
join_keys = ["card_id"]

[[views]]
name = "card_activity"
version = 3
source = "payments-value"
entity = "card"
owner = "fraud-team@example.com"
allowed_lateness = "10m"

[[views.aggregations]]
column = "amount"
functions = ["count", "sum", "mean", "min", "max", "std", "last"]
windows = ["10m/1m", "1h/5m"]

[[views.aggregations]]
column = "merchant_id"
functions = ["distinct"]
windows = ["1h/5m"]

[[views.aggregations]]
column = "country"
functions = ["last"]
windows = ["1h/5m"]

[[views.aggregations]]
column = "channel"
functions = ["last", "count"]
windows = ["10m/1m"]
"""


def stream(n: int, seed: int, end_ms: int, cards: int = 150) -> list[tuple[int, dict[str, Any]]]:
    """(partition, event) pairs: times climb over 3 hours with jitter up to 15 minutes
    back, and about 2% of events come 2 hours late."""
    rng = random.Random(seed)
    out = []
    start = end_ms - 3 * 60 * MINUTE
    for i in range(n):
        card = rng.randint(0, cards - 1)
        t = start + (end_ms - start) * i // n - rng.randint(0, 15 * MINUTE)
        if rng.random() < 0.02:
            t -= 120 * MINUTE
        event = {
            "payment_id": f"p-{seed}-{i}",
            "card_id": f"card_{card:06d}",
            "amount": round(rng.lognormvariate(3, 1.2), 2),
            "currency": "EUR",
            "merchant_id": f"m-{int(rng.paretovariate(1.2)) % 500}",
            "merchant_category": "5411",
            "country": rng.choice(["DE", "FR", "NL", "PL"]),
            "channel": rng.choice(["POS", "ONLINE", "ATM", "MOTO"]),
            "ip_address": None,
            "ts": t,
        }
        out.append((card % PARTITIONS, event))
    return out


def expected_late(events: list[tuple[int, dict[str, Any]]]) -> set[str]:
    """The watermark rule, written out: behind the partition's max so far by > retention."""
    marks: dict[int, int] = {}
    late = set()
    for partition, e in events:
        mark = marks.get(partition)
        if mark is not None and e["ts"] < mark - RETENTION:
            late.add(e["payment_id"])
        else:
            marks[partition] = max(mark or e["ts"], e["ts"])
    return late


def produce(services: Services, registry: RunningRegistry, topic: str,
            events: list[tuple[int, dict[str, Any]]],
            tamper: Callable[[int, bytes], bytes] | None = None) -> None:  # fmt: skip
    """Send each event to its partition, keyed by card; ``tamper(i, value)`` may replace
    the i-th event's bytes."""
    client = registry.client()
    client.register_schema("payments-value", Schema(V1, "AVRO"))
    serializer = AvroSerializer(client, V1)
    ctx = SerializationContext(topic, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": services.kafka_bootstrap, "linger.ms": 20})
    for i, (partition, event) in enumerate(events):
        value = serializer(event, ctx)
        if tamper is not None:
            value = tamper(i, value)
        while True:
            try:
                producer.produce(topic, key=event["card_id"].encode(), value=value,
                                 partition=partition)  # fmt: skip
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def definition(topic: str, group: str, prefix: str, batch_size: int = 2000) -> ConsumerDefinition:
    import tomllib

    raw = tomllib.loads(VIEWS)
    return ConsumerDefinition.model_validate(
        {
            "name": group, "topics": [topic], "subject": "payments-value", "group": group,
            "batch_size": batch_size, "batch_wait_ms": 200,
            "sinks": {"online": {"prefix": prefix}}, **raw,
        }
    )  # fmt: skip


def values_at(store: RedisOnlineStore, d: ConsumerDefinition, cards: list[str],
              at: int) -> pl.DataFrame:  # fmt: skip
    view = d.views[0]
    return store.read(view, pl.DataFrame({"card_id": cards}), at, [f.name for f in view.features])


def test_online_equals_point_in_time_offline_for_a_random_stream(
    services: Services, registry: RunningRegistry, new_topic, redis_prefix: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    topic = new_topic(partitions=PARTITIONS)
    end = int(time.time() * 1000) - MINUTE
    events = stream(12_000, seed=7, end_ms=end)
    produce(services, registry, topic, events)
    d = definition(topic, f"fs-{topic}", redis_prefix.rstrip(":"))
    store = RedisOnlineStore(connect(services.redis_url), d.join_keys, d.sinks.online.prefix)
    runtime = ConsumerRuntime(d, {"bootstrap.servers": services.kafka_bootstrap},
                              RegistryClient(registry.url), str(tmp_path),
                              clock=lambda: end / 1000, online=store)  # fmt: skip
    deadline = time.monotonic() + 180
    runtime.run(until=lambda s: s.events_in >= len(events) or time.monotonic() > deadline)
    assert runtime.stats.events_in == len(events)

    late = expected_late(events)
    assert late, "the stream should hold late events"
    letters, _ = show({"bootstrap.servers": services.kafka_bootstrap}, f"{topic}.dlq", limit=None)
    assert {letter.reason for letter in letters} == {"LATE_EVENT"}
    dead_ids = {payment_id(letter.source, events) for letter in letters}
    assert dead_ids == late

    rng = random.Random(11)
    newest = max(e["ts"] for _, e in events)
    cards = [*sorted({e["card_id"] for _, e in events})[:60], "card_999999"]
    view = d.views[0]
    for at in (newest, newest + 3 * MINUTE + 17, newest + 40 * MINUTE, newest + 2 * 60 * MINUTE):
        sample = [*rng.sample(cards, 25), "card_999999"]
        online = values_at(store, d, sample, at)
        rows = pl.DataFrame({"card_id": sample, "event_timestamp": [at] * len(sample)})
        refs = [f"{view.name}:{f.name}" for f in view.features]
        offline = get_historical_features(
            rows, refs, views={view.name: view}, join_keys=d.join_keys,
            offline_root=str(tmp_path), event_time="ts",
        )  # fmt: skip
        assert offline.select("card_id", "event_timestamp").equals(rows)
        assert_close(online, offline.drop("card_id", "event_timestamp"))
    # Values decay: two hours after the last event every window is empty.
    empty = values_at(store, d, cards[:5], newest + 2 * 60 * MINUTE)
    assert empty["amount_count_1h"].to_list() == [0] * 5

    # The same training set from the command line.
    path = tmp_path / "defs" / "consumer.toml"
    path.parent.mkdir()
    path.write_text(f'name = "x"\ntopics = ["{topic}"]\nsubject = "payments-value"\n' + VIEWS)
    rows.write_parquet(tmp_path / "rows.parquet")
    env = {**os.environ, "FEATURESTORE_REGISTRY_URL": registry.url}
    done = subprocess.run(
        [sys.executable, "-m", "featurestore.cli", "history", "--entities",
         str(tmp_path / "rows.parquet"), "--features", ",".join(refs), "--output",
         str(tmp_path / "train.parquet"), "--definitions", str(path.parent),
         "--offline-path", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert pl.read_parquet(tmp_path / "train.parquet").equals(offline)

    project_answers_the_same(tmp_path, path, d, refs, sample, at, offline, store,
                             services.redis_url, registry.url)  # fmt: skip


def project_answers_the_same(  # noqa: PLR0917 - the test's state
    tmp_path: Path, path: Path, d: ConsumerDefinition, refs: list[str], sample: list[str],
    at: int, offline: pl.DataFrame, store: RedisOnlineStore, redis_url: str, registry_url: str,
) -> None:  # fmt: skip
    """The training set and the online values again, through the project object as a
    Feast user writes it: a project file names the definitions and the settings."""
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "featurestore.toml").write_text(
        f'name = "payments"\ndefinitions = "../defs"\n\n[settings]\noffline_path = ".."\n'
        f'registry_url = "{registry_url}"\nredis_url = "{redis_url}"\n'
    )
    sink = f'[sinks.online]\nprefix = "{d.sinks.online.prefix}"\n\n[[entities]]'
    service = f'\n[[feature_services]]\nname = "model"\nfeatures = {json.dumps(refs)}\n'
    path.write_text(path.read_text().replace("[[entities]]", sink, 1) + service)
    rows = pl.DataFrame({"card_id": sample, "event_timestamp": [at] * len(sample)})
    project = FeatureStore(repo_path=tmp_path / "project", clock=lambda: at)
    try:
        job = project.get_historical_features(entity_df=rows.to_pandas(), features=refs)
        assert job.to_polars().equals(offline)
        by_service = project.get_historical_features(entity_df=rows, features="model")
        assert by_service.to_polars().equals(offline)
        frame = job.to_df()
        assert type(frame).__module__.startswith("pandas")
        assert list(frame.columns) == offline.columns
        answer = project.get_online_features(
            features=refs, entity_rows=[{"card_id": c} for c in sample]
        )
        assert answer.to_dict()["card_id"] == sample
        assert_close(answer.to_polars().drop("card_id"), values_at(store, d, sample, at))
        assert type(answer.to_df()).__module__.startswith("pandas")
    finally:
        project.close()


def payment_id(source: str, events: list[tuple[int, dict[str, Any]]]) -> str:
    """The payment id of a dead letter's source ``topic[partition]@offset``."""
    partition = int(source.split("[")[1].split("]", maxsplit=1)[0])
    offset = int(source.rsplit("@", 1)[1])
    in_partition = [e for p, e in events if p == partition]
    return str(in_partition[offset]["payment_id"])


def _lag(services: Services, topic: str, group: str) -> int:
    # read_uncommitted: do not wait for the stable offsets of a transaction a killed
    # consumer left open (Kafka aborts it after transaction.timeout.ms); read the last
    # committed ones.
    consumer = Consumer({"bootstrap.servers": services.kafka_bootstrap, "group.id": group,
                         "isolation.level": "read_uncommitted"})  # fmt: skip
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = consumer.committed(parts, timeout=30)
        lag = 0
        for tp in committed:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(topic, tp.partition), timeout=10
            )
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        consumer.close()


def run_command(
    services: Services, registry: RunningRegistry, home: Path, topic: str, *, name: str,
    prefix: str, batch_size: int,
) -> tuple[list[str], dict[str, str]]:  # fmt: skip
    """`featurestore run` of a consumer ``name`` of ``topic`` with VIEWS (group
    ``fs-<name>-<topic>``, Redis ``prefix``, dead letters to ``<topic>.dlq.<name>``,
    events to ``home/offline-<name>``), and its environment."""
    path = home / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\ntopics = ["{topic}"]\nsubject = "payments-value"\n'
        f'group = "fs-{name}-{topic}"\ndlq_topic = "{topic}.dlq.{name}"\n'
        f"batch_size = {batch_size}\nbatch_wait_ms = 100\n"
        f'[sinks.online]\nprefix = "{prefix}"\n' + VIEWS
    )
    env = {
        **os.environ,
        "FEATURESTORE_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "FEATURESTORE_REDIS_URL": services.redis_url,
        "FEATURESTORE_REGISTRY_URL": registry.url,
        "FEATURESTORE_OFFLINE_PATH": str(home / f"offline-{name}"),
    }
    return [sys.executable, "-m", "featurestore.cli", "run", str(path)], env


@pytest.mark.chaos
def test_sigkill_mid_stream_then_restart_equals_an_uninterrupted_run(
    services: Services, registry: RunningRegistry, new_topic, redis_prefix: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    topic = new_topic(partitions=PARTITIONS)
    end = int(time.time() * 1000) - MINUTE
    events = stream(30_000, seed=8, end_ms=end, cards=400)
    produce(services, registry, topic, events)
    killed_prefix = redis_prefix + "killed"
    group = f"fs-killed-{topic}"
    command, env = run_command(services, registry, tmp_path, topic, name="killed",
                               prefix=killed_prefix, batch_size=1000)  # fmt: skip
    # Named, so the restart takes the partitions back at once (static membership).
    env["FEATURESTORE_INSTANCE_ID"] = "killed-0"
    client = connect(services.redis_url)
    for attempt in range(2):
        log = (tmp_path / f"run-{attempt}.log").open("w")
        run = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        if attempt == 0:
            # Kill once some batches are in Redis but far from all of them.
            while time.monotonic() < deadline and _lag(services, topic, group) > 20_000:
                time.sleep(0.05)
            time.sleep(0.3)
            run.send_signal(signal.SIGKILL)
            run.wait(30)
            assert 0 < _lag(services, topic, group) < len(events), "kill came too late"
        else:
            while time.monotonic() < deadline and _lag(services, topic, group) > 0:
                assert run.poll() is None, (tmp_path / "run-1.log").read_text()[-3000:]
                time.sleep(0.2)
            run.send_signal(signal.SIGTERM)
            run.wait(30)
        log.close()
    assert _lag(services, topic, group) == 0

    # The same stream, uninterrupted, in-process, into other keys.
    d = definition(topic, f"fs-whole-{topic}", redis_prefix + "whole", batch_size=5000)
    whole = RedisOnlineStore(client, d.join_keys, d.sinks.online.prefix)
    runtime = ConsumerRuntime(d, {"bootstrap.servers": services.kafka_bootstrap},
                              RegistryClient(registry.url), str(tmp_path / "offline-whole"),
                              online=whole)  # fmt: skip
    deadline = time.monotonic() + 180
    runtime.run(until=lambda s: s.events_in >= len(events) or time.monotonic() > deadline)

    killed = RedisOnlineStore(client, d.join_keys, killed_prefix)
    cards = sorted({e["card_id"] for _, e in events})
    newest = max(e["ts"] for _, e in events)
    for at in (newest, newest + 30 * MINUTE):
        assert_close(values_at(killed, d, cards, at), values_at(whole, d, cards, at))

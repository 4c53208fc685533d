"""`featurestore run`, `dlq show` and `dlq replay` as an operator uses them: a real
process, SIGTERM to stop, Prometheus counters that add up, and a replay after a fix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from featurestore.local.process import free_port
from featurestore.stream.dlq_tools import show
from tests.conftest import Services
from tests.integration.registry.conftest import RunningRegistry

pytestmark = pytest.mark.integration

V1 = (Path(__file__).parents[2] / "schemas" / "card_payment.v1.avsc").read_text()


def _event(i: int, currency: str = "EUR") -> dict[str, object]:
    return {
        "payment_id": f"p-{i}", "card_id": f"card_{i:06d}", "amount": 10.0 + i,
        "currency": currency, "merchant_id": "m", "merchant_category": "5411",
        "country": "DE", "channel": "POS", "ip_address": "10.0.0.1",
        "ts": int(time.time() * 1000) - 60_000,
    }  # fmt: skip


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _featurestore(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "featurestore.cli", *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def _produce_payments(services: Services, registry: RunningRegistry, topic: str) -> None:
    """200 payments; every 20th carries a lower-case currency, a contract violation."""
    client = registry.client()
    client.register_schema("payments-value", Schema(V1, "AVRO"))
    serializer = AvroSerializer(client, V1)
    ctx = SerializationContext(topic, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": services.kafka_bootstrap})
    for i in range(200):
        value = serializer(_event(i, "eur" if i % 20 == 0 else "EUR"), ctx)
        producer.produce(topic, key=f"card_{i:06d}".encode(), value=value)
    assert producer.flush(30) == 0


def test_run_stop_metrics_show_and_replay(
    services: Services, registry: RunningRegistry, new_topic, tmp_path: Path
) -> None:
    topic = new_topic(partitions=2)
    _produce_payments(services, registry, topic)

    definition = tmp_path / "payments.toml"
    port = free_port()
    definition.write_text(
        f'name = "cli-e2e"\ntopics = ["{topic}"]\nsubject = "payments-value"\n'
        f'group = "g-{topic}"\nbatch_wait_ms = 200\nmetrics_port = {port}\n'
    )
    env = {
        **os.environ,
        "FEATURESTORE_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "FEATURESTORE_REGISTRY_URL": registry.url,
        "FEATURESTORE_OFFLINE_PATH": str(tmp_path / "offline"),
        "COLUMNS": "200",
    }
    run = subprocess.Popen(
        [sys.executable, "-m", "featurestore.cli", "run", str(definition)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        metrics = ""
        while _metric(metrics, "featurestore_events_in_total") < 200:
            assert run.poll() is None, run.stderr.read() if run.stderr else ""
            assert time.monotonic() < deadline, "the consumer did not get through 200 events"
            time.sleep(0.3)
            try:
                metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            except httpx.HTTPError:
                continue
        valid = _metric(metrics, "featurestore_events_valid_total", consumer="cli-e2e")
        dead = _metric(metrics, "featurestore_events_dead_lettered_total",
                       reason="CONSTRAINT_VIOLATION")  # fmt: skip
        assert (valid, dead) == (190, 10)
        for probe, answer in (("healthz", "live"), ("readyz", "ready: consuming")):
            got = httpx.get(f"http://127.0.0.1:{port}/{probe}")
            assert (got.status_code, got.text.split(":")[0]) == (200, answer.split(":")[0])
    finally:
        run.send_signal(signal.SIGTERM)
        _out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert "cli-e2e stopped: 200 in, 190 valid, dead-lettered: CONSTRAINT_VIOLATION 10" in err

    shown = _featurestore(env, "dlq", "show", f"{topic}.dlq", "--reason", "CONSTRAINT_VIOLATION")
    assert shown.returncode == 0, shown.stderr
    assert "10 dead letters" in shown.stdout
    assert "currency" in shown.stdout
    assert "10.0.0.1" not in shown.stdout  # the PII field never shows

    # Replay after a "fix" that does not fix anything: the records come back, are dead-
    # lettered again with their replay count, and a second replay stops at the limit.
    replayed = _featurestore(env, "dlq", "replay", f"{topic}.dlq", "--max-replays", "1")
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed 10 to {topic}" in replayed.stderr
    again = subprocess.Popen(
        [sys.executable, "-m", "featurestore.cli", "run", str(definition), "--metrics-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    kafka = {"bootstrap.servers": services.kafka_bootstrap}
    deadline = time.monotonic() + 60
    while sum(show(kafka, f"{topic}.dlq")[1].values()) < 20:
        assert time.monotonic() < deadline, "replayed records were not dead-lettered again"
        time.sleep(0.5)
    again.send_signal(signal.SIGTERM)
    again.communicate(timeout=60)
    letters, _ = show(kafka, f"{topic}.dlq")
    assert sorted(v.replays for v in letters) == [0] * 10 + [1] * 10
    exhausted = _featurestore(env, "dlq", "replay", f"{topic}.dlq", "--max-replays", "1")
    assert "10 exhausted" in exhausted.stderr
    assert "replayed nothing" in exhausted.stderr


def test_dlq_show_of_a_topic_that_does_not_exist_says_so(services: Services) -> None:
    env = {**os.environ, "FEATURESTORE_KAFKA_BOOTSTRAP": services.kafka_bootstrap}
    shown = _featurestore(env, "dlq", "show", "no-such-topic.dlq")
    assert shown.returncode == 1
    assert "topic 'no-such-topic.dlq' does not exist" in shown.stderr + shown.stdout
    assert "Traceback" not in shown.stderr

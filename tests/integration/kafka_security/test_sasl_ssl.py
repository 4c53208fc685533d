"""Kafka behind SASL_SSL, configured only through FEATURESTORE_KAFKA_CONFIG.

Every client of these tests talks SASL_SSL to the dedicated broker of conftest.py:
`featurestore run` consumes there, writes to Redis and Parquet and dead-letters there,
`featurestore dlq show` reads the dead letters back, and `featurestore registry serve`
keeps its schemas there. A wrong password or an untrusted CA stops a command at once,
saying what to fix, and no output ever holds the password. The contract registry of the
consumer tests stays on the session broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from featurestore.errors import ConfigError
from featurestore.kafka_access import check_kafka_access
from featurestore.local.process import free_port
from featurestore.offline import scan_events
from featurestore.online import RedisOnlineStore, connect
from featurestore.stream import ConsumerDefinition
from tests.conftest import Services
from tests.integration.kafka_security.conftest import PASSWORD, SecureKafka
from tests.integration.registry.conftest import RunningRegistry

pytestmark = pytest.mark.integration

V1 = (Path(__file__).parents[3] / "schemas" / "card_payment.v1.avsc").read_text()
WRONG_PASSWORD = "not-alices-Pa55-for-tests"
EVENTS, CARDS = 60, 6  # every 10th event breaks the contract (lower-case currency)
VIEW = """
[[entities]]
name = "card"
join_keys = ["card_id"]

[[views]]
name = "card_spend"
version = 1
source = "payments-value"
entity = "card"
owner = "fraud-team@example.com"

[[views.aggregations]]
column = "amount"
functions = ["count", "sum"]
windows = ["1h/1m"]
"""


def _topic(kafka: SecureKafka, name: str, partitions: int = 2) -> str:
    admin = AdminClient(kafka.client())
    admin.create_topics([NewTopic(name, num_partitions=partitions)])[name].result(timeout=30)
    return name


def _produce(kafka: SecureKafka, registry: RunningRegistry, topic: str) -> list[dict[str, Any]]:
    client = registry.client()
    client.register_schema("payments-value", Schema(V1, "AVRO"))
    serializer = AvroSerializer(client, V1)
    ctx = SerializationContext(topic, MessageField.VALUE)
    producer = Producer(kafka.client())
    now = int(time.time() * 1000)
    events = []
    for i in range(EVENTS):
        event = {
            "payment_id": f"p-{i}", "card_id": f"card_{i % CARDS:06d}", "amount": 10.0 + i,
            "currency": "eur" if i % 10 == 0 else "EUR", "merchant_id": "m",
            "merchant_category": "5411", "country": "DE", "channel": "POS",
            "ip_address": None, "ts": now - 60_000 + i,
        }  # fmt: skip
        producer.produce(topic, key=event["card_id"].encode(), value=serializer(event, ctx))
        events.append(event)
    assert producer.flush(30) == 0
    return events


def _env(properties: Path, **more: str) -> dict[str, str]:
    """The CLI's environment: Kafka only from the properties file (the session's
    FEATURESTORE_KAFKA_BOOTSTRAP, when the tests were given one, would win over it)."""
    env = {k: v for k, v in os.environ.items() if k != "FEATURESTORE_KAFKA_BOOTSTRAP"}
    return {**env, "FEATURESTORE_KAFKA_CONFIG": str(properties), "COLUMNS": "200", **more}


def _featurestore(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "featurestore.cli", *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def _events_in(port: int) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    except httpx.HTTPError:
        return 0.0
    counts = [
        line for line in text.splitlines() if line.startswith("featurestore_events_in_total{")
    ]
    return sum(float(line.rsplit(" ", 1)[1]) for line in counts)


def _definition(tmp_path: Path, topic: str, prefix: str, metrics_port: int = 0) -> Path:
    path = tmp_path / "payments.toml"
    path.write_text(
        f'name = "secure"\ntopics = ["{topic}"]\nsubject = "payments-value"\n'
        f'group = "g-{topic}"\nbatch_wait_ms = 200\nmetrics_port = {metrics_port}\n'
        f'[sinks.online]\nprefix = "{prefix}"\n' + VIEW
    )
    return path


def test_run_and_dlq_show_over_sasl_ssl_from_the_properties_file(  # noqa: PLR0917
    secure_kafka: SecureKafka, services: Services, registry: RunningRegistry,
    redis_prefix: str, unique_name: str, tmp_path: Path,
) -> None:  # fmt: skip
    topic = _topic(secure_kafka, unique_name)
    events = _produce(secure_kafka, registry, topic)
    port = free_port()
    definition = _definition(tmp_path, topic, redis_prefix.rstrip(":"), port)
    offline = tmp_path / "offline"
    env = _env(
        secure_kafka.properties(tmp_path / "client.properties"),
        FEATURESTORE_REDIS_URL=services.redis_url,
        FEATURESTORE_REGISTRY_URL=registry.url,
        FEATURESTORE_OFFLINE_PATH=str(offline),
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "featurestore.cli", "run", str(definition)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while _events_in(port) < EVENTS:
            assert run.poll() is None, run.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the consumer did not get through the events"
            time.sleep(0.2)
    finally:
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err[-3000:]
    bad = EVENTS // 10
    assert f"{EVENTS} in, {EVENTS - bad} valid, dead-lettered: CONSTRAINT_VIOLATION {bad}" in err
    # The settings in effect are logged, the password masked.
    assert "security.protocol=SASL_SSL, sasl.mechanisms=PLAIN, sasl.username=alice, " in err
    assert "sasl.password=***" in err
    assert PASSWORD not in out + err

    valid = [e for e in events if e["currency"] == "EUR"]
    written = scan_events(str(offline), "payments-value").collect()
    assert sorted(written["payment_id"]) == sorted(e["payment_id"] for e in valid)

    d = ConsumerDefinition.model_validate(tomllib.loads(definition.read_text()))
    store = RedisOnlineStore(connect(services.redis_url), d.join_keys, d.sinks.online.prefix)
    cards = sorted({e["card_id"] for e in events})
    online = store.read(d.views[0], pl.DataFrame({"card_id": cards}), int(time.time() * 1000),
                        ["amount_count_1h", "amount_sum_1h"])  # fmt: skip
    assert online["amount_count_1h"].to_list() == [
        sum(e["card_id"] == card for e in valid) for card in cards
    ]
    assert online["amount_sum_1h"].to_list() == [
        sum(e["amount"] for e in valid if e["card_id"] == card) for card in cards
    ]

    shown = _featurestore(env, "dlq", "show", f"{topic}.dlq")
    assert shown.returncode == 0, shown.stderr
    assert f"{bad} dead letters in {topic}.dlq (CONSTRAINT_VIOLATION: {bad})" in shown.stdout
    assert PASSWORD not in shown.stdout + shown.stderr


def test_a_wrong_password_stops_run_and_dlq_show_saying_what_to_fix(  # noqa: PLR0917
    secure_kafka: SecureKafka, services: Services, registry: RunningRegistry,
    redis_prefix: str, unique_name: str, tmp_path: Path,
) -> None:  # fmt: skip
    topic = _topic(secure_kafka, unique_name)
    _produce(secure_kafka, registry, topic)
    properties = secure_kafka.properties(tmp_path / "client.properties", WRONG_PASSWORD)
    env = _env(
        properties,
        FEATURESTORE_REDIS_URL=services.redis_url,
        FEATURESTORE_REGISTRY_URL=registry.url,
        FEATURESTORE_OFFLINE_PATH=str(tmp_path / "offline"),
    )
    started = time.monotonic()
    run = _featurestore(env, "run", str(_definition(tmp_path, topic, redis_prefix.rstrip(":"))))
    assert time.monotonic() - started < 30, "a refused login should stop the run at once"
    assert run.returncode == 1, run.stderr[-3000:]
    message = " ".join(run.stderr.split())  # rich wraps long lines
    assert "Traceback" not in run.stderr
    assert f"Kafka at {secure_kafka.bootstrap} refused the credentials" in message
    assert "Invalid username or password" in message
    assert "Check sasl.username and sasl.password (and sasl.mechanisms) in " in message
    assert f"FEATURESTORE_KAFKA_CONFIG ({properties})" in message
    assert WRONG_PASSWORD not in run.stdout + run.stderr

    # Nothing was consumed: no dead-letter topic, no consumer group, nothing written.
    # (ListGroups asks the broker itself: no coordinator, no offsets topic needed.)
    admin = AdminClient(secure_kafka.client())
    assert f"{topic}.dlq" not in admin.list_topics(timeout=10).topics
    groups = admin.list_consumer_groups(request_timeout=10).result(timeout=30)
    assert f"g-{topic}" not in {g.group_id for g in groups.valid}
    assert not (tmp_path / "offline").exists()

    shown = _featurestore(env, "dlq", "show", f"{topic}.dlq")
    assert shown.returncode == 1
    assert "refused the credentials" in shown.stderr
    assert WRONG_PASSWORD not in shown.stdout + shown.stderr


def test_an_untrusted_ca_fails_the_tls_handshake_clearly(secure_kafka: SecureKafka) -> None:
    config = {**secure_kafka.client(), "ssl.ca.location": "/nonexistent-ca.pem"}
    with pytest.raises(ConfigError, match=r"ssl\.ca\.location"):
        check_kafka_access(config, "here")
    system = Path("/etc/ssl/certs/ca-certificates.crt")  # trusts much, not our test CA
    if system.exists():
        config["ssl.ca.location"] = str(system)
        with pytest.raises(ConfigError, match=r"failed the TLS handshake.*certificate verify"):
            check_kafka_access(config, "here")
    check_kafka_access(secure_kafka.client(), "here")  # the right CA: no complaint


def test_registry_serve_keeps_its_schemas_over_sasl_ssl(
    secure_kafka: SecureKafka, unique_name: str, tmp_path: Path
) -> None:
    port = free_port()
    env = _env(secure_kafka.properties(tmp_path / "client.properties"))
    serve = subprocess.Popen(
        [sys.executable, "-m", "featurestore.cli", "registry", "serve", "--port", str(port),
         "--topic", f"_schemas-{unique_name}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert serve.poll() is None, serve.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the registry did not answer"
            try:
                httpx.get(f"{url}/subjects").raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        registered = SchemaRegistryClient({"url": url}).register_schema(
            "payments-value", Schema(V1, "AVRO")
        )
        assert registered >= 1
    finally:
        serve.send_signal(signal.SIGTERM)
        out = serve.communicate(timeout=30)[0]
    assert PASSWORD not in out
    # The schema is in the topic on the secure broker.
    consumer = Consumer(
        {**secure_kafka.client(), "group.id": unique_name, "auto.offset.reset": "earliest"}
    )
    try:
        consumer.assign([TopicPartition(f"_schemas-{unique_name}", 0, 0)])
        found = [consumer.poll(10) for _ in range(2)]
        assert any(m is not None and m.error() is None for m in found)
    finally:
        consumer.close()

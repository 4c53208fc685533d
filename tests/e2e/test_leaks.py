"""PII and secrets audit, end to end: no output of a running consumer quotes a value of a
pii field, or a password or token, whatever the input.

Every event carries canaries in its two pii fields: a unique ``pii-canary-<hex>`` in
``ip_address`` (a string with a pattern and a max_length) and a unique 19-digit number in
``customer_ref`` (a long with a min). The stream holds valid events, events that break
the rules of the pii fields themselves, events that break other rules, undecodable
bytes of every kind (junk, truncated, trailing bytes, invalid UTF-8, an unknown schema
id, a body whose missing field makes a reader take the pii number for a length), events
too late for the contract and for the view's watermark, and a shift of the amounts after
a baseline, so violation-rate and drift alerts fire.

`featurestore run` runs as a process at DEBUG, on a Redis with a password and a registry
that needs credentials for reads and writes (the consumer gives user info in the
registry URL, the commands a token). Then every output is collected: the process's log,
the error headers of every dead letter, the alerts topic, the keys and values the
consumer and the monitoring keep in Redis (not the feature tiles, which are the online
store's data, as the Parquet files are the offline store's), `featurestore dlq show`,
`featurestore monitor baseline` and `monitor report` (text and HTML), and the consumer's
/metrics. None may hold a canary or a secret. The dead letters' original value bytes
must hold the canaries (they are kept for replay by design): the canaries were there to
leak.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
import redis
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from featurestore.contracts.registry import RegistryAuth
from featurestore.local.process import free_port
from featurestore.stream.dlq import ERROR_PREFIXES
from tests.conftest import Services
from tests.integration.online.conftest import PASSWORD as REDIS_PASSWORD

pytestmark = pytest.mark.integration

MINUTE = 60_000
SUBJECT = "payments-value"
CANARY = "pii-canary-"
CANARY_HEX = CANARY.encode().hex()
NUMBER_BASE = 7_301_000_000_000_000_000  # customer_ref canaries: 19 digits, none else
OWNER = "payments-team@example.com"
CONTRACT = {
    "type": "record",
    "name": "AuditedPayment",
    "namespace": "com.example.audit",
    "featurestore": {"entity": ["card_id"], "event_time": "ts", "owner": OWNER,
                     "max_future_skew": "5m", "max_age": "7d"},
    "fields": [
        {"name": "payment_id", "type": "string", "constraints": {"max_length": 64}},
        {"name": "card_id", "type": "string", "constraints": {"pattern": "^card_[0-9]{6}$"}},
        {"name": "customer_ref", "type": "long", "pii": True, "constraints": {"min": 0}},
        {"name": "amount", "type": "double", "constraints": {"min": 0, "max": 1_000_000}},
        {"name": "currency", "type": "string", "constraints": {"pattern": "^[A-Z]{3}$"}},
        {"name": "ip_address", "type": ["null", "string"], "default": None, "pii": True,
         "constraints": {"max_length": 45, "pattern": "^[0-9a-z.:-]+$"}},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}  # fmt: skip
PARSED = fastavro.parse_schema(json.loads(json.dumps(CONTRACT)))
DEFINITION = """
name = "audited"
topics = ["{topic}"]
subject = "payments-value"
group = "fs-audited-{topic}"
batch_size = 2000
batch_wait_ms = 100
metrics_port = {metrics_port}

[sinks.offline]
path = "{offline}"

[sinks.online]
prefix = "{prefix}"

[monitoring]
check_interval = "1s"
window = "5m"
min_events = 100
violation_rate = 0.05
rule_rate = 0.003
freshness = "1h"
alerts_topic = "{alerts}"

[[entities]]
name = "card"
join_keys = ["card_id"]

[[views]]
name = "card_risk"
source = "payments-value"
entity = "card"
owner = "fraud-team@example.com"
allowed_lateness = "10m"

[views.drift]
min_count = 100
window = "1h"

[[views.aggregations]]
column = "amount"
functions = ["mean", "max"]
windows = ["1h/5m"]

[[views.aggregations]]
column = "ip_address"
functions = ["distinct"]
windows = ["1h/5m"]
"""


# --- the stream ------------------------------------------------------------------------


class Stream:
    """Events with fresh canaries, and the encodings that break them."""

    def __init__(self) -> None:
        self.count = 0
        self.numbers: set[int] = set()

    def event(self, ts: int, amount: float, **overrides: Any) -> dict[str, Any]:
        self.count += 1
        number = NUMBER_BASE + self.count * 7919
        self.numbers.add(number)
        event = {
            "payment_id": f"p-{self.count}", "card_id": f"card_{self.count % 150:06d}",
            "customer_ref": number, "amount": amount, "currency": "EUR",
            "ip_address": f"{CANARY}{uuid.uuid4().hex}", "ts": ts,
        }  # fmt: skip
        return {**event, **overrides}

    def valid(self, n: int, start: int, end: int, scale: float) -> list[dict[str, Any]]:
        return [self.event(start + (end - start) * i // n, 20.0 * scale + i % 13) for i in range(n)]


def body(event: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, PARSED, event)
    return out.getvalue()


def framed(event_body: bytes, schema_id: int) -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + event_body


def avro_string(text: str) -> bytes:
    data, n, out = text.encode(), len(text.encode()) * 2, bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes([*out, n]) + data


def broken(stream: Stream, schema_id: int, now: int) -> dict[str, list[bytes]]:
    """Per kind, 25 values that break the contract or the decoder, each with canaries."""

    def enc(event: dict[str, Any]) -> bytes:
        return framed(body(event), schema_id)

    def bad_utf8(event: dict[str, Any]) -> bytes:
        ip = event["ip_address"].encode()
        return framed(body(event).replace(ip, ip[:-4] + b"\xff\xfe\xfd\xfc"), schema_id)

    def misaligned(event: dict[str, Any]) -> bytes:
        # card_id left out: a reader takes customer_ref (the pii number) for its length
        head = avro_string(event["payment_id"])
        return framed(head + body(event)[len(head) + len(avro_string(event["card_id"])) :],
                      schema_id)  # fmt: skip

    makers = {
        "ip too long": lambda e: enc({**e, "ip_address": e["ip_address"] + "-" + "0" * 20}),
        "ip pattern": lambda e: enc({**e, "ip_address": e["ip_address"] + " X!"}),
        "customer_ref min": lambda e: enc({**e, "customer_ref": -e["customer_ref"]}),
        "amount min": lambda e: enc({**e, "amount": -5.0}),
        "currency pattern": lambda e: enc({**e, "currency": "eur"}),
        "missing entity": lambda e: enc({**e, "card_id": ""}),
        "future": lambda e: enc({**e, "ts": now + 60 * MINUTE}),
        "max_age": lambda e: enc({**e, "ts": now - 8 * 24 * 60 * MINUTE}),
        "watermark late": lambda e: enc({**e, "ts": now - 3 * 60 * MINUTE}),
        "junk": lambda e: f"junk {e['ip_address']} {e['customer_ref']}".encode(),
        "truncated": lambda e: framed(body(e)[:-12], schema_id),
        "trailing bytes": lambda e: framed(body(e) + b"\x02\x04", schema_id),
        "unknown schema": lambda e: framed(body(e), 987_654),
        "invalid utf-8": bad_utf8,
        "misaligned": misaligned,
    }
    return {
        kind: [make(stream.event(now - 20 * MINUTE, 30.0)) for _ in range(25)]
        for kind, make in makers.items()
    }


def produce(services: Services, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": services.kafka_bootstrap, "linger.ms": 20})
    for value in values:
        producer.produce(topic, key=b"k", value=value, headers=[("origin", b"audit")])
    assert producer.flush(60) == 0


# --- reading back ----------------------------------------------------------------------


def read_all(services: Services, topic: str) -> list[Message]:
    consumer = Consumer({"bootstrap.servers": services.kafka_bootstrap,
                         "group.id": f"audit-{uuid.uuid4().hex}",
                         "isolation.level": "read_committed"})  # fmt: skip
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, 0)])
        out: list[Message] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            position = consumer.position([TopicPartition(topic, 0)])[0].offset
            if position >= high:
                break
            message = consumer.poll(1.0)
            if message is not None and not message.error():
                out.append(message)
        return out
    finally:
        consumer.close()


def committed_lag(services: Services, topic: str, group: str) -> int:
    consumer = Consumer({"bootstrap.servers": services.kafka_bootstrap, "group.id": group})
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return high - max(tp.offset, 0)
    finally:
        consumer.close()


def redis_dump(client: redis.Redis, prefix: str, tiles: str) -> str:
    """Every key under ``prefix`` and its value, but the feature tiles (``tiles``*)."""
    lines = []
    for key in sorted(client.scan_iter(match=f"{prefix}*", count=1000)):
        name = key.decode()
        if name.startswith(tiles):
            continue
        kind = client.type(key).decode()
        if kind == "hash":
            value: Any = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = client.get(key)
        lines.append(f"{name} ({kind}): {value!r}")
    return "\n".join(lines)


def leaks(text: str, numbers: set[int], secrets: list[str]) -> list[str]:
    """What of the canaries and secrets ``text`` holds, with some context."""
    found = []
    for needle in [CANARY, CANARY_HEX, *secrets]:
        for m in re.finditer(re.escape(needle), text, flags=re.IGNORECASE):
            found.append(text[max(0, m.start() - 120) : m.end() + 60])
    for m in re.finditer(r"\d{19}", text):
        if int(m.group()) in numbers:
            found.append(text[max(0, m.start() - 120) : m.end() + 20])
    return found


# --- the test --------------------------------------------------------------------------


@pytest.fixture
def secrets() -> dict[str, str]:
    return {
        "token": f"tok-{uuid.uuid4().hex}",
        "user_info": f"auditor:pw-{uuid.uuid4().hex}",
        "server_token": f"srv-{uuid.uuid4().hex}",
    }


def test_no_output_quotes_a_pii_value_or_a_secret(  # noqa: PLR0917, PLR0915 - one audit
    services: Services, start_registry: Any, new_topic: Any, password_redis_port: int,
    secrets: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    registry = start_registry(auth=RegistryAuth(token=secrets["token"],
                                                user_info=secrets["user_info"],
                                                protect_reads=True))  # fmt: skip
    stock = registry.client(**{"basic.auth.user.info": secrets["user_info"]})
    schema_id = stock.register_schema(SUBJECT, Schema(json.dumps(CONTRACT), "AVRO"))
    topic = new_topic(partitions=1)
    dlq, alerts, group = f"{topic}.dlq", f"{topic}.alerts", f"fs-audited-{topic}"
    prefix = f"audit-{uuid.uuid4().hex[:8]}"
    redis_url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{password_redis_port}/0"
    client = redis.Redis.from_url(redis_url)
    metrics_port = free_port()
    folder, offline = tmp_path / "definitions", tmp_path / "offline"
    folder.mkdir()
    definition = DEFINITION.format(topic=topic, metrics_port=metrics_port, offline=offline,
                                   prefix=prefix, alerts=alerts)  # fmt: skip
    (folder / "audited.toml").write_text(definition)
    env = {
        **os.environ,
        "FEATURESTORE_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "FEATURESTORE_REDIS_URL": redis_url,
        "FEATURESTORE_REGISTRY_URL": registry.url,
        "FEATURESTORE_REGISTRY_TOKEN": secrets["token"],
        "FEATURESTORE_REGISTRY_USER_INFO": secrets["user_info"],
        "FEATURESTORE_SERVER_TOKEN": secrets["server_token"],
        "FEATURESTORE_LOG_LEVEL": "debug",
        "COLUMNS": "1000",  # no wrapped table cell hides a canary from the scan
    }
    # The consumer authenticates with the user info in the registry URL instead (the
    # stock client's basic.auth.credentials.source=URL); the commands with the token.
    consumer_env = {**env, "FEATURESTORE_REGISTRY_URL": registry.url.replace(
        "://", f"://{secrets['user_info']}@")}  # fmt: skip
    del consumer_env["FEATURESTORE_REGISTRY_TOKEN"], consumer_env["FEATURESTORE_REGISTRY_USER_INFO"]

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "featurestore.cli", *args], env=env,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    stream, now = Stream(), int(time.time() * 1000)
    serializer = AvroSerializer(stock, json.dumps(CONTRACT))
    ctx = SerializationContext(topic, MessageField.VALUE)
    # 1. A steady period, the baseline's.
    steady = stream.valid(2500, now - 100 * MINUTE, now - 40 * MINUTE, scale=1.0)
    produce(services, topic, [serializer(e, ctx) for e in steady])
    outputs: dict[str, str] = {}
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "featurestore.cli", "run", str(folder / "audited.toml")],
            env=consumer_env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_consumed(services, topic, group, run, log_path)
            outputs["monitor baseline"] = cli(
                "monitor", "baseline", "card_risk", "--definitions", str(folder),
                "--offline-path", str(offline), "--from", utc(now - 100 * MINUTE),
                "--to", utc(now - 40 * MINUTE),
            )  # fmt: skip
            # 2. Amounts x5, and every kind of bad input among them.
            kinds = broken(stream, schema_id, now)
            shifted = stream.valid(2000, now - 39 * MINUTE, now - MINUTE, scale=5.0)
            bad = [value for values in kinds.values() for value in values]
            produce(services, topic, interleave([serializer(e, ctx) for e in shifted], bad))
            wait_consumed(services, topic, group, run, log_path)
            time.sleep(1.2)  # a monitoring check is due again
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as page:
                outputs["/metrics"] = page.read().decode()
        finally:
            run.send_signal(signal.SIGTERM)
            run.wait(60)
    outputs["consumer log"] = log_path.read_text()
    assert run.returncode == 0, outputs["consumer log"][-3000:]

    letters = read_all(services, dlq)
    outputs["dead-letter error headers"] = "\n".join(
        repr([(k, v) for k, v in m.headers() or [] if k.startswith(ERROR_PREFIXES)])
        for m in letters
    )
    alert_messages = read_all(services, alerts)
    outputs["alerts topic"] = "\n".join(repr((m.key(), m.value())) for m in alert_messages)
    outputs["redis (all but tiles)"] = redis_dump(client, prefix, f"{prefix}:card_risk:v1:")
    outputs["dlq show"] = cli("dlq", "show", dlq, "--limit", "10000")
    report = tmp_path / "report.html"
    outputs["monitor report"] = cli("monitor", "report", "card_risk", "--definitions",
                                    str(folder), "--output", str(report))  # fmt: skip
    outputs["monitor report html"] = report.read_text()

    # Not vacuous: every dead letter of every kind held canaries; the outputs say
    # something; the secrets were needed.
    assert len(letters) == len(bad), outputs["dlq show"][-3000:]
    assert all(CANARY.encode() in (m.value() or b"") for m in letters)
    headers = [{k: v.decode() for k, v in m.headers() or []} for m in letters]
    assert {h["fs.error.reason"] for h in headers} == {
        "CONSTRAINT_VIOLATION", "MISSING_ENTITY", "FUTURE_EVENT", "LATE_EVENT", "DECODE_ERROR",
        "UNKNOWN_SCHEMA",
    }  # fmt: skip
    assert {"ip_address", "customer_ref"} <= {h.get("fs.error.field") for h in headers}
    fired = {(a["kind"], a["name"]) for a in (json.loads(m.value()) for m in alert_messages)}
    assert {("violation_rate", "all rules"), ("violation_rate", "ip_address:pattern"),
            ("violation_rate", "ip_address:max_length"), ("violation_rate", "customer_ref:min"),
            ("drift", "input amount")} <= fired  # fmt: skip
    assert "{@alerts}" in outputs["redis (all but tiles)"]
    assert " DEBUG " in outputs["consumer log"]
    assert "featurestore_events_dead_lettered_total" in outputs["/metrics"]
    assert "input ip_address" in outputs["monitor report html"]
    assert client.exists(f"{prefix}:card_risk:v1:card_000001")  # written with the password

    secret_values = [REDIS_PASSWORD, secrets["token"], secrets["user_info"].split(":")[1],
                     secrets["server_token"],
                     base64.b64encode(secrets["user_info"].encode()).decode()]  # fmt: skip
    found = {name: hits for name, text in outputs.items()
             if (hits := leaks(text, stream.numbers, secret_values))}  # fmt: skip
    assert not found, "\n\n".join(f"{name}: {hits[:3]}" for name, hits in found.items())
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.unlink(key)


def utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def interleave(good: list[bytes], bad: list[bytes]) -> list[bytes]:
    """``bad`` spread evenly through ``good``."""
    every = max(1, len(good) // max(1, len(bad)))
    out: list[bytes] = []
    for i, value in enumerate(good):
        out.append(value)
        if i % every == 0 and i // every < len(bad):
            out.append(bad[i // every])
    return out + bad[len(good[::every]) :]


def wait_consumed(services: Services, topic: str, group: str, run: subprocess.Popen[bytes],
                  log_path: Path) -> None:  # fmt: skip
    deadline = time.monotonic() + 60
    while committed_lag(services, topic, group) > 0:
        assert run.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.2)

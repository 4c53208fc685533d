"""`featurestore serve` and `featurestore get` as processes: several workers behind one
port with their metrics summed, the registry mounted beside the features for the stock
Confluent client, and one entity printed in the terminal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from featurestore.local.process import free_port
from tests.integration.serving.conftest import REFS, Served

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).parents[3] / "schemas"


@contextmanager
def serving(served: Served, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "featurestore.cli", "serve", "--definitions",
         str(served.definitions), "--port", str(port), *args],
        env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "featurestore serve did not get ready"
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_workers_serve_and_sum_their_metrics(served: Served) -> None:
    with serving(served, "--workers", "2", "--max-entities", "5") as url:
        body = {"entities": {"card_id": served.cards[:3]}, "features": REFS}
        for _ in range(20):  # spread over both workers
            assert httpx.post(f"{url}/features", json=body).status_code == 200
        too_many = {"entities": {"card_id": served.cards[:6]}, "features": REFS}
        assert httpx.post(f"{url}/features", json=too_many).status_code == 413
        text = httpx.get(f"{url}/metrics").text
        line = next(row for row in text.splitlines()
                    if row.startswith("featurestore_http_request_seconds_count")
                    and 'route="/features"' in row)  # fmt: skip
        assert float(line.rsplit(" ", 1)[1]) == 21.0
        assert 'status="413"' in text


def test_registry_mounted_beside_the_features(served: Served, services: Any) -> None:
    topic = f"_schemas_{time.time_ns()}"
    env = {"FEATURESTORE_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
           "FEATURESTORE_REGISTRY_TOPIC": topic}  # fmt: skip
    with serving(served, "--registry", env=env) as url:
        client = SchemaRegistryClient({"url": f"{url}/registry"})
        schema = (SCHEMAS / "card_payment.v1.avsc").read_text()
        schema_id = client.register_schema("payments-value", Schema(schema, "AVRO"))
        assert client.get_latest_version("payments-value").schema_id == schema_id
        assert httpx.get(f"{url}/registry/subjects").json() == ["payments-value"]
        body = {"entities": {"card_id": served.cards[:1]}, "features": REFS}
        assert httpx.post(f"{url}/features", json=body).status_code == 200


def test_get_prints_one_entity(served: Served) -> None:
    def get(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "featurestore.cli", "get", *args,
             "--definitions", str(served.definitions)],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip

    shown = get("card_spend", served.cards[0])
    assert shown.returncode == 0, shown.stderr
    assert f"card_spend v1  card_id={served.cards[0]}  status PRESENT" in shown.stdout
    assert "amount_std_24h" in shown.stdout
    as_json = json.loads(get("card_places", served.unknown, "--json").stdout)
    assert as_json["status"] == "NOT_FOUND"
    assert as_json["features"]["country_last_24h"] is None
    missing = get("card_nope", "x")
    assert missing.returncode == 1
    assert "unknown feature view 'card_nope'" in missing.stderr
    assert "Traceback" not in missing.stderr

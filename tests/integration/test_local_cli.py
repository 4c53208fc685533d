"""`featurestore local up|down|status` as a developer runs it: real processes, in a
home of the test's own (the jars stay in the shared cache)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, Producer

from featurestore.local.process import ProcessRecord, is_running

pytestmark = pytest.mark.integration


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "featurestore.cli", "local", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _records(home: Path) -> list[ProcessRecord]:
    state = json.loads((home / "state.json").read_text())
    return [ProcessRecord.from_json(e["process"]) for e in state.values() if e.get("process")]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A stack home of the test's own; whatever the test leaves running is stopped."""
    path = tmp_path / "stack"
    yield path
    _cli(path, "down")
    if (path / "state.json").exists():
        assert not any(is_running(r) for r in _records(path))


def test_up_twice_status_down_and_up_again_keeps_data(home: Path) -> None:
    first = _cli(home, "up", "--json")
    assert first.returncode == 0, first.stderr
    endpoints = json.loads(first.stdout)
    assert set(endpoints) == {"kafka", "redis", "registry"}
    assert endpoints["registry"].startswith("http://127.0.0.1:")
    assert endpoints["kafka"].startswith("127.0.0.1:")
    assert endpoints["redis"].startswith("redis://127.0.0.1:")
    started = _records(home)
    assert len(started) == 3
    assert all(is_running(r) for r in started)

    # Up again: same endpoints, no new processes.
    again = _cli(home, "up", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == endpoints
    assert "already running" in again.stderr
    assert _records(home) == started

    status = _cli(home, "status", "--json")
    assert json.loads(status.stdout) == endpoints

    # The local registry answers, and keeps what it was given across down/up.
    registered = httpx.post(
        f"{endpoints['registry']}/subjects/kept-value/versions",
        json={"schema": '{"type": "string"}'},
    )
    assert registered.status_code == 200, registered.text
    # A record written before `down` must be there after the next `up`.
    producer = Producer({"bootstrap.servers": endpoints["kafka"]})
    producer.produce("kept", key=b"k", value=b"survives down/up")
    assert producer.flush(30) == 0
    del producer

    down = _cli(home, "down")
    assert down.returncode == 0, down.stderr
    assert "stopped: kafka, redis, registry" in down.stderr
    assert not any(is_running(r) for r in started)
    assert json.loads(_cli(home, "status", "--json").stdout) == {}
    assert "nothing was running" in _cli(home, "down").stderr

    back = _cli(home, "up", "--json")
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout) == endpoints  # ports reused while free
    consumer = Consumer(
        {
            "bootstrap.servers": endpoints["kafka"],
            "group.id": "kept-reader",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe(["kept"])
    msgs = consumer.consume(num_messages=1, timeout=20)
    consumer.close()
    assert [m.value() for m in msgs] == [b"survives down/up"]
    kept = httpx.get(f"{endpoints['registry']}/subjects/kept-value/versions/latest")
    assert kept.json()["id"] == registered.json()["id"]
    assert "stopped" in _cli(home, "down").stderr
    assert not any(is_running(r) for r in _records(home))


def test_up_refuses_to_move_a_running_service(home: Path) -> None:
    up = _cli(home, "up", "--json")
    assert up.returncode == 0, up.stderr
    redis_port = int(json.loads(up.stdout)["redis"].rsplit(":", 1)[1].split("/")[0])
    moved = _cli(home, "up", "--redis-port", str(redis_port + 1))
    assert moved.returncode == 1
    assert "already runs on port" in moved.stderr
    assert "local down" in moved.stderr
    assert "Traceback" not in moved.stderr
    assert "stopped" in _cli(home, "down").stderr

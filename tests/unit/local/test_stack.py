"""The local stack's bookkeeping: process ownership, ports, settings, clear errors.
No Kafka or Redis here: only short-lived `sleep` processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from featurestore.errors import ConfigError, MissingToolError
from featurestore.local import LocalStack, with_local_defaults
from featurestore.local.process import (
    ProcessRecord,
    free_port,
    is_running,
    port_is_free,
    spawn,
    stop,
)
from featurestore.settings import Settings


def _sleeper(tmp_path: Path) -> ProcessRecord:
    marker = str(tmp_path / "marker.conf")
    cmd = [sys.executable, "-c", "import time, sys; time.sleep(60)", marker]
    return spawn(cmd, tmp_path / "sleep.log", cwd=tmp_path, marker=marker)


def test_a_process_is_ours_only_while_its_marker_matches(tmp_path: Path) -> None:
    record = _sleeper(tmp_path)
    try:
        assert is_running(record)
        # Same pid, another command line: a reused pid is not ours to signal.
        impostor = ProcessRecord(pid=record.pid, marker="/other/server.properties", log="")
        assert not is_running(impostor)
        assert not stop(impostor)
        assert is_running(record)
    finally:
        assert stop(record)
    assert not is_running(record)
    assert not stop(record)  # stopping twice is harmless


def test_free_port_is_free_until_taken() -> None:
    import socket

    port = free_port()
    assert port_is_free(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert not port_is_free(port)


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEATURESTORE_KAFKA_BOOTSTRAP", "k:9092")
    monkeypatch.setenv("FEATURESTORE_REDIS_URL", "redis://r:6379/2")
    monkeypatch.setenv("FEATURESTORE_REGISTRY_URL", "http://reg:8081")
    monkeypatch.setenv("FEATURESTORE_OFFLINE_PATH", "s3://bucket/offline")
    monkeypatch.setenv("FEATURESTORE_CACHE_DIR", str(tmp_path))
    settings = Settings()
    assert settings.kafka_bootstrap == "k:9092"
    assert settings.redis_url == "redis://r:6379/2"
    assert settings.registry_url == "http://reg:8081"
    assert settings.offline_path == "s3://bucket/offline"
    assert settings.local_dir == tmp_path / "local"
    # Everything given: nothing local is started or even looked at.
    assert with_local_defaults(settings) == settings


def test_unset_endpoints_stay_unset_when_nothing_runs(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path, kafka_bootstrap=None, redis_url=None)
    filled = with_local_defaults(settings, start=False)
    assert filled.kafka_bootstrap is None
    assert filled.redis_url is None
    assert filled.offline_path == str(tmp_path / "local" / "offline")


def test_only_needed_services_are_looked_for(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path, kafka_bootstrap="k:9092", redis_url=None)
    filled = with_local_defaults(settings, needs=["kafka"])
    assert filled.redis_url is None  # not needed: not started, not filled
    assert not (tmp_path / "local" / "state.json").exists()


def test_up_names_a_missing_redis_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    stack = LocalStack(tmp_path / "home", tmp_path / "cache")
    with pytest.raises(MissingToolError, match=r"redis-server.*apt-get install redis-server"):
        stack.up(services=["redis"])
    assert stack.status()["redis"].running is False


def test_up_rejects_unknown_services(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown local service"):
        LocalStack(tmp_path, tmp_path).up(services=["zookeeper"])

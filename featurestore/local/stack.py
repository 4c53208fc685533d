"""The local stack: real Kafka and Redis processes for development, tests and demos.

Invariants:
- ``state.json`` in the stack's home records exactly the processes ``up`` started;
  ``down`` stops only those, and only while they are still the processes we started.
- ``up`` is idempotent: a service already running is reported, never started twice.
  A file lock serialises concurrent ``up``/``down`` on one home.
- Ports are free ports unless given, and are reused on the next ``up`` when still free,
  so the data of a stopped stack (topics, offsets, Redis AOF) stays reachable.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featurestore.errors import ConfigError
from featurestore.local.kafka import (
    DownloadProgress,
    KafkaDistribution,
    KafkaServer,
    wait_for_kafka,
)
from featurestore.local.process import (
    ProcessRecord,
    free_port,
    is_running,
    port_is_free,
    stop,
)
from featurestore.local.redis import RedisServer, wait_for_redis
from featurestore.local.registry import start_registry, wait_for_registry
from featurestore.settings import Settings

SERVICES = ("kafka", "redis", "registry")


@dataclass(frozen=True)
class Endpoints:
    """Where the services answer; ``None`` for a service this stack does not run."""

    kafka: str | None = None
    redis: str | None = None
    registry: str | None = None

    def as_dict(self) -> dict[str, str]:
        pairs = (("kafka", self.kafka), ("redis", self.redis), ("registry", self.registry))
        return {k: v for k, v in pairs if v}


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    endpoint: str | None
    pid: int | None
    log: str | None
    rss_mb: float | None
    ready_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _endpoint(name: str, entry: dict[str, Any]) -> str:
    port = entry["port"]
    return {
        "kafka": f"127.0.0.1:{port}",
        "redis": f"redis://127.0.0.1:{port}/0",
        "registry": f"http://127.0.0.1:{port}",
    }[name]


class LocalStack:
    """Kafka and Redis processes owned by one home directory."""

    def __init__(self, home: Path, cache_dir: Path, kafka_version: str = "4.1.1") -> None:
        self.home = home
        self.distribution = KafkaDistribution(kafka_version, cache_dir)

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalStack:
        return cls(settings.local_dir, settings.cache_dir, settings.kafka_version)

    @property
    def state_path(self) -> Path:
        return self.home / "state.json"

    def _load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_path)

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.home / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield self._load()

    @staticmethod
    def _running(entry: dict[str, Any] | None) -> bool:
        return bool(entry and entry.get("process")) and is_running(
            ProcessRecord.from_json(entry["process"])  # type: ignore[index]
        )

    @staticmethod
    def _pick_port(given: int | None, previous: int | None) -> int:
        if given is not None:
            return given
        if previous is not None and port_is_free(previous):
            return previous
        return free_port()

    def up(
        self,
        kafka_port: int | None = None,
        redis_port: int | None = None,
        registry_port: int | None = None,
        *,
        services: Iterable[str] = SERVICES,
        progress: DownloadProgress | None = None,
        say: Callable[[str], None] = lambda _msg: None,
    ) -> Endpoints:
        """Start every requested service that is not already running; wait until ready."""
        unknown = set(services) - set(SERVICES)
        if unknown:
            raise ConfigError(f"unknown local service(s) {sorted(unknown)}; known: {SERVICES}")
        requested = set(services)
        if "registry" in requested:
            requested.add("kafka")  # the registry keeps its schemas in the local Kafka
        wanted = [name for name in SERVICES if name in requested]
        given = {"kafka": kafka_port, "redis": redis_port, "registry": registry_port}
        with self._locked() as state:
            for name in wanted:
                entry = state.get(name)
                if self._running(entry):
                    assert entry is not None
                    if given[name] not in (None, entry["port"]):
                        raise ConfigError(
                            f"local {name} already runs on port {entry['port']}; "
                            "run `featurestore local down` first to change its port."
                        )
                    say(f"{name} already running at {_endpoint(name, entry)}")
                    continue
                previous = entry or {}
                port = self._pick_port(given[name], previous.get("port"))
                if name == "kafka":
                    entry = self._start_kafka(port, previous, progress)
                elif name == "redis":
                    entry = self._start_redis(port)
                else:
                    entry = self._start_registry(port, _endpoint("kafka", state["kafka"]))
                state[name] = entry
                self._save(state)
                say(f"{name} ready at {_endpoint(name, entry)} in {entry['ready_seconds']}s")
            return Endpoints(**{n: _endpoint(n, state[n]) for n in wanted if n in state})

    def _start_kafka(
        self, port: int, previous: dict[str, Any], progress: DownloadProgress | None
    ) -> dict[str, Any]:
        libs = self.distribution.ensure(progress)
        controller_port = self._pick_port(None, previous.get("controller_port"))
        home = self.home / "kafka"
        if previous.get("controller_port") not in (None, controller_port):
            # The KRaft voter set stores the controller's address: a moved controller
            # cannot rejoin its old log, so the storage is started afresh.
            shutil.rmtree(home / "data", ignore_errors=True)
        server = KafkaServer(home, port, controller_port)
        record = server.start(libs)
        entry = _when_ready(record, port, lambda: wait_for_kafka(server.bootstrap, record))
        return {**entry, "controller_port": controller_port}

    def _start_redis(self, port: int) -> dict[str, Any]:
        server = RedisServer(self.home / "redis", port)
        record = server.start()
        return _when_ready(record, port, lambda: wait_for_redis(server.url, record))

    def _start_registry(self, port: int, kafka: str) -> dict[str, Any]:
        record = start_registry(self.home / "registry", port, kafka)
        url = _endpoint("registry", {"port": port})
        return _when_ready(record, port, lambda: wait_for_registry(url, record))

    def down(self) -> list[str]:
        """Stop what ``up`` started; returns the names of the services stopped."""
        stopped: list[str] = []
        with self._locked() as state:
            for name in reversed(SERVICES):  # the registry before the Kafka it reads
                entry = state.get(name)
                if entry and entry.get("process"):
                    if stop(ProcessRecord.from_json(entry["process"])):
                        stopped.insert(0, name)
                    entry["process"] = None
            self._save(state)
        return stopped

    def status(self) -> dict[str, ServiceStatus]:
        state = self._load()
        result = {}
        for name in SERVICES:
            entry = state.get(name) or {}
            running = self._running(entry)
            record = ProcessRecord.from_json(entry["process"]) if running else None
            result[name] = ServiceStatus(
                name=name,
                running=running,
                endpoint=_endpoint(name, entry) if running else None,
                pid=record.pid if record else None,
                log=record.log if record else None,
                rss_mb=_rss_mb(record.pid) if record else None,
                ready_seconds=entry.get("ready_seconds") if running else None,
            )
        return result

    def endpoints(self) -> Endpoints:
        """Endpoints of the services running now (``None`` for those stopped)."""
        status = self.status()
        return Endpoints(**{name: s.endpoint for name, s in status.items()})


def _when_ready(record: ProcessRecord, port: int, wait: Callable[[], float]) -> dict[str, Any]:
    """Wait for a just-started service; stop it if it never gets ready."""
    try:
        waited = wait()
    except BaseException:
        stop(record)
        raise
    return {
        "port": port,
        "process": record.to_json(),
        "ready_seconds": round(waited, 2),
        "started_at": time.time(),
    }


def with_local_defaults(
    settings: Settings, needs: Iterable[str] = SERVICES, start: bool = True
) -> Settings:
    """``settings`` with the unset endpoints among ``needs`` filled from the local stack.

    With ``start`` those services are started; without it, only running ones are used
    and an endpoint nobody runs stays ``None``. A service the caller does not need is
    never started.
    """
    wanted = set(needs)
    given = {
        "kafka_bootstrap": ("kafka", settings.kafka_bootstrap),
        "redis_url": ("redis", settings.redis_url),
        "registry_url": ("registry", settings.registry_url),
    }
    missing = {
        field: service
        for field, (service, value) in given.items()
        if value is None and service in wanted
    }
    update: dict[str, Any] = {}
    if missing:
        stack = LocalStack.from_settings(settings)
        endpoints = stack.up(services=missing.values()) if start else stack.endpoints()
        for field, service in missing.items():
            update[field] = getattr(endpoints, service)
    if settings.offline_path is None:
        update["offline_path"] = str(settings.local_dir / "offline")
    return settings.model_copy(update=update)

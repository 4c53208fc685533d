"""Registry servers for the tests: the real app under uvicorn in a thread, on the
session's Kafka, each test on a schema topic of its own."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator

import pytest
import uvicorn
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from featurestore.contracts.registry import RegistryAuth, RegistryState, SchemaLog, create_app
from featurestore.local.process import free_port
from tests.conftest import Services


def fresh_topic(prefix: str) -> str:
    """A registry topic name no test used; the registry creates the topic itself."""
    return f"_schemas-{prefix}-{uuid.uuid4().hex[:8]}"


def delete_topics(services: Services, names: Iterable[str]) -> None:
    admin = AdminClient({"bootstrap.servers": services.kafka_bootstrap})
    for future in admin.delete_topics(list(names)).values():
        with contextlib.suppress(Exception):  # best effort
            future.result(timeout=30)


class _ObservedLog(SchemaLog):
    """The real log, remembering why it failed to start (uvicorn only says it did)."""

    failure: BaseException | None = None

    def start(self) -> None:
        try:
            super().start()
        except BaseException as exc:
            self.failure = exc
            raise


class RunningRegistry:
    """One registry instance: start, stop, and restart on the same topic."""

    def __init__(self, kafka: str, topic: str, auth: RegistryAuth | None = None) -> None:
        self.kafka = kafka
        self.topic = topic
        self.auth = auth or RegistryAuth()
        self.port = free_port()
        self.state = RegistryState()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RunningRegistry:
        self.state = RegistryState()
        log = _ObservedLog(self.state, self.kafka, self.topic)
        app = create_app(self.state, log, self.auth)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"registry on {self.url} did not start: {log.failure!r}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
        self._server = self._thread = None

    def client(self, **conf: str) -> SchemaRegistryClient:
        return SchemaRegistryClient({"url": self.url, **conf})


@pytest.fixture
def start_registry(
    services: Services, unique_name: str
) -> Iterator[Callable[..., RunningRegistry]]:
    """Start registry instances; all on this test's topic unless given another."""
    started: list[RunningRegistry] = []

    def start(topic: str | None = None, auth: RegistryAuth | None = None) -> RunningRegistry:
        registry = RunningRegistry(
            services.kafka_bootstrap, topic or f"_schemas-{unique_name}", auth
        )
        started.append(registry.start())
        return registry

    yield start
    for registry in started:
        registry.stop()


@pytest.fixture
def registry(start_registry: Callable[..., RunningRegistry]) -> RunningRegistry:
    return start_registry()

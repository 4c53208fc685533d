"""Registry servers for the tests: the real app under uvicorn in a thread, on the
session's Kafka, each test on a schema topic of its own."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable, Iterator

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from featurestore.contracts.registry import RegistryAuth
from featurestore.contracts.registry.embedded import EmbeddedRegistry
from tests.conftest import Services


def fresh_topic(prefix: str) -> str:
    """A registry topic name no test used; the registry creates the topic itself."""
    return f"_schemas-{prefix}-{uuid.uuid4().hex[:8]}"


def delete_topics(services: Services, names: Iterable[str]) -> None:
    admin = AdminClient({"bootstrap.servers": services.kafka_bootstrap})
    for future in admin.delete_topics(list(names)).values():
        with contextlib.suppress(Exception):  # best effort
            future.result(timeout=30)


class RunningRegistry(EmbeddedRegistry):
    """An embedded registry, with a stock client for it."""

    def __init__(self, kafka: str, topic: str, auth: RegistryAuth | None = None) -> None:
        super().__init__(kafka, topic, auth)

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

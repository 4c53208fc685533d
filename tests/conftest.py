"""Session-wide services for the tests: real Apache Kafka and Redis.

Where they come from, in order:
1. the environment (FEATURESTORE_KAFKA_BOOTSTRAP / FEATURESTORE_REDIS_URL), per service;
2. testcontainers, when a Docker engine answers;
3. the project's own `featurestore.local` processes, in a temporary home that is
   stopped at the end of the session (jars stay cached under the user's cache dir).

Isolation: each test gets unique topic names (``new_topic``) and its own Redis key
prefix (``redis_prefix``), whose keys are deleted after the test.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis
from confluent_kafka.admin import AdminClient, NewTopic

from featurestore.local import LocalStack
from featurestore.settings import Settings


@dataclass(frozen=True)
class Services:
    kafka_bootstrap: str
    redis_url: str
    origin: str


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def _containers(need_kafka: bool, need_redis: bool) -> Iterator[tuple[str | None, str | None]]:
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.community.redis import RedisContainer

    with contextlib.ExitStack() as stack:
        kafka = redis_url = None
        if need_kafka:
            kafka = stack.enter_context(
                KafkaContainer("confluentinc/cp-kafka:7.9.0").with_kraft()
            ).get_bootstrap_server()
        if need_redis:
            container = stack.enter_context(RedisContainer("redis:7"))
            host = container.get_container_host_ip()
            redis_url = f"redis://{host}:{container.get_exposed_port(6379)}/0"
        yield kafka, redis_url


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    settings = Settings()
    kafka, redis_url = settings.kafka_bootstrap, settings.redis_url
    if kafka and redis_url:
        yield Services(kafka, redis_url, "environment")
        return
    if _docker_answers():
        with _containers(kafka is None, redis_url is None) as (tc_kafka, tc_redis):
            yield Services(kafka or tc_kafka or "", redis_url or tc_redis or "", "testcontainers")
        return
    wanted = [name for name, value in (("kafka", kafka), ("redis", redis_url)) if not value]
    stack = LocalStack(tmp_path_factory.mktemp("local-stack"), settings.cache_dir,
                       settings.kafka_version)  # fmt: skip
    try:
        endpoints = stack.up(services=wanted)
        yield Services(kafka or endpoints.kafka or "", redis_url or endpoints.redis or "", "local")
    finally:
        stack.down()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses: the test's name plus a random suffix."""
    base = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name).strip("-")[:60]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def kafka_admin(services: Services) -> AdminClient:
    return AdminClient({"bootstrap.servers": services.kafka_bootstrap})


@pytest.fixture
def new_topic(kafka_admin: AdminClient, unique_name: str) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics for this test; they are deleted afterwards."""
    created: list[str] = []

    def create(partitions: int = 1, suffix: str = "", config: dict[str, str] | None = None) -> str:
        name = f"{unique_name}{suffix}-{len(created)}"
        futures = kafka_admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})]
        )
        futures[name].result(timeout=30)
        created.append(name)
        # The controller has the topic; a broker's metadata may lag a moment behind
        # (UNKNOWN_TOPIC_OR_PART): wait until it serves every partition.
        deadline = time.monotonic() + 30
        while True:
            topic = kafka_admin.list_topics(name, timeout=10).topics.get(name)
            if topic is not None and topic.error is None and len(topic.partitions) == partitions:
                return name
            assert time.monotonic() < deadline, f"topic {name} has no metadata after 30 s"
            time.sleep(0.05)

    yield create
    if created:
        for future in kafka_admin.delete_topics(created).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)


@pytest.fixture
def redis_prefix(services: Services, unique_name: str) -> Iterator[str]:
    """A key prefix for this test alone; every key under it is deleted afterwards."""
    prefix = f"test:{unique_name}:"
    yield prefix
    client = redis.Redis.from_url(services.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.unlink(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_client(services: Services) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(services.redis_url)
    yield client
    client.close()

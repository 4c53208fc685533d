"""Embedded infrastructure for development and tests: real Apache Kafka (KRaft, jars
from Maven Central), Redis (``redis-server``) and the contract registry as processes,
cached under the user's cache dir and owned by ``featurestore local up|down|status``.
"""

from featurestore.local.kafka import KafkaDistribution, KafkaServer, wait_for_kafka
from featurestore.local.redis import RedisServer, wait_for_redis
from featurestore.local.registry import start_registry, wait_for_registry
from featurestore.local.stack import (
    SERVICES,
    Endpoints,
    LocalStack,
    ServiceStatus,
    with_local_defaults,
)

__all__ = [
    "SERVICES",
    "Endpoints",
    "KafkaDistribution",
    "KafkaServer",
    "LocalStack",
    "RedisServer",
    "ServiceStatus",
    "start_registry",
    "wait_for_kafka",
    "wait_for_redis",
    "wait_for_registry",
    "with_local_defaults",
]

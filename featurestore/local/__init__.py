"""Embedded infrastructure for development and tests: real Apache Kafka (KRaft, jars
from Maven Central) and Redis (``redis-server``) processes, cached under the user's
cache dir and owned by ``featurestore local up|down|status``.
"""

from featurestore.local.kafka import KafkaDistribution, KafkaServer, wait_for_kafka
from featurestore.local.redis import RedisServer, wait_for_redis
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
    "wait_for_kafka",
    "wait_for_redis",
    "with_local_defaults",
]

"""End-to-end fixtures: the registry servers of the registry tests, and the Redis with a
password of the online-store tests, reused here."""

from tests.integration.online.conftest import password_redis_port
from tests.integration.registry.conftest import registry, start_registry

__all__ = ["password_redis_port", "registry", "start_registry"]

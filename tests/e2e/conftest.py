"""End-to-end fixtures: the registry servers of the registry tests, reused here."""

from tests.integration.registry.conftest import registry, start_registry

__all__ = ["registry", "start_registry"]

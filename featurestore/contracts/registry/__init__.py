"""The contract registry: a Confluent-compatible schema registry whose state lives in a
compacted Kafka topic (``log``), rebuilt into memory (``state``) and served over HTTP
(``app``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from featurestore.contracts.registry.log import DEFAULT_TOPIC, SchemaLog
from featurestore.contracts.registry.state import RegistryState, SchemaVersion

if TYPE_CHECKING:
    from featurestore.contracts.registry.app import RegistryAuth, create_app
    from featurestore.contracts.registry.embedded import EmbeddedRegistry

# The HTTP app (FastAPI, ~0.3 s to import) loads when first named: a consumer that only
# talks to a registry (`featurestore run`, its restarts) does not pay for serving one.
_LAZY = {
    "RegistryAuth": "featurestore.contracts.registry.app",
    "create_app": "featurestore.contracts.registry.app",
    "EmbeddedRegistry": "featurestore.contracts.registry.embedded",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [
    "DEFAULT_TOPIC",
    "EmbeddedRegistry",
    "RegistryAuth",
    "RegistryState",
    "SchemaLog",
    "SchemaVersion",
    "create_app",
]

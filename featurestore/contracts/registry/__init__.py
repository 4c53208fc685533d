"""The contract registry: a Confluent-compatible schema registry whose state lives in a
compacted Kafka topic (``log``), rebuilt into memory (``state``) and served over HTTP
(``app``)."""

from featurestore.contracts.registry.app import RegistryAuth, create_app
from featurestore.contracts.registry.embedded import EmbeddedRegistry
from featurestore.contracts.registry.log import DEFAULT_TOPIC, SchemaLog
from featurestore.contracts.registry.state import RegistryState, SchemaVersion

__all__ = [
    "DEFAULT_TOPIC",
    "EmbeddedRegistry",
    "RegistryAuth",
    "RegistryState",
    "SchemaLog",
    "SchemaVersion",
    "create_app",
]

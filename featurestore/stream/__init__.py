"""The consumer runtime: micro-batches from Kafka, contract enforcement, dead letters,
sinks, and offsets committed only after everything is durable."""

from featurestore.stream.definition import ConsumerDefinition, load_definition
from featurestore.stream.runtime import ConsumerRuntime, ConsumerStats

__all__ = ["ConsumerDefinition", "ConsumerRuntime", "ConsumerStats", "load_definition"]

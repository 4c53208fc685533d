"""featurestore: a streaming feature store and online validator.

Producers register Avro contracts; consumers enforce them on every Kafka event,
dead-letter what breaks them, and feed windowed features to Redis (online) and
Parquet (offline). See docs/ARCHITECTURE.md for how the packages fit together.
`FeatureStore(repo_path=".")` is the project's Feast-shaped entry point
(`featurestore.project`).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["FeatureStore"]


def __getattr__(name: str) -> Any:
    """``from featurestore import FeatureStore`` without importing it at every start."""
    if name == "FeatureStore":
        from featurestore.project import FeatureStore

        return FeatureStore
    raise AttributeError(f"module 'featurestore' has no attribute {name!r}")

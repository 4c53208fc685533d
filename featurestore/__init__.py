"""featurestore: a streaming feature store and online validator.

Producers register Avro contracts; consumers enforce them on every Kafka event,
dead-letter what breaks them, and feed windowed features to Redis (online) and
Parquet (offline). See docs/ARCHITECTURE.md for how the packages fit together.
"""

__version__ = "0.1.0"

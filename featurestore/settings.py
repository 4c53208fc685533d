"""The one settings model: every endpoint and path featurestore reads from the
environment (``FEATURESTORE_*``) or from command-line flags.

An unset endpoint means "use the local services": the CLI fills it from the local
stack (``featurestore local up``), never from a hard-coded address.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_cache_dir() -> Path:
    """The user's cache dir for featurestore (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "featurestore"


class Settings(BaseSettings):
    """Endpoints and paths; ``None`` means "take it from the local stack"."""

    model_config = SettingsConfigDict(env_prefix="FEATURESTORE_", extra="ignore")

    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers, e.g. 127.0.0.1:9092."
    )
    redis_url: str | None = Field(
        default=None, description="Redis URL, e.g. redis://127.0.0.1:6379/0 (rediss:// for TLS)."
    )
    registry_url: str | None = Field(
        default=None, description="Confluent-compatible schema registry URL."
    )
    offline_path: str | None = Field(
        default=None, description="Root of the offline Parquet store (local path or URI)."
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="Where downloaded jars and the local stack live.",
    )
    local_home: Path | None = Field(
        default=None,
        description="Runtime dir of the local stack (state, data, logs); "
        "default <cache_dir>/local.",
    )
    registry_topic: str = Field(
        default="_featurestore_schemas",
        description="Compacted Kafka topic holding the registry's schemas and configs.",
    )
    registry_token: str | None = Field(
        default=None, description="Bearer token the registry requires for writes."
    )
    registry_user_info: str | None = Field(
        default=None,
        description="user:password the registry requires for writes (HTTP basic); clients "
        "send it too.",
    )
    registry_protect_reads: bool = Field(
        default=False, description="Require the registry credentials for reads as well."
    )
    server_token: str | None = Field(
        default=None, description="Bearer token the feature server requires (not for health)."
    )
    server_max_entities: int = Field(
        default=1000, gt=0, description="Most entity rows one feature server request may ask."
    )
    kafka_version: str = Field(default="4.1.1", description="Apache Kafka version for local runs.")

    @property
    def local_dir(self) -> Path:
        return self.local_home or self.cache_dir / "local"

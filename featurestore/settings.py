"""The one settings model: every endpoint and path featurestore reads from the
environment (``FEATURESTORE_*``), the project file's ``[settings]``
(``featurestore.toml``, `featurestore.project`; the environment wins) or command-line
flags.

An unset endpoint means "use the local services": the CLI fills it from the local
stack (``featurestore local up``), never from a hard-coded address.

Kafka clients take their settings from two places: ``FEATURESTORE_KAFKA_CONFIG``, a
librdkafka client properties file (``key=value`` lines, as ``kcat -F`` reads) holding
``security.protocol``, ``sasl.*`` and ``ssl.*`` so that secrets stay out of the
definitions in git; and ``FEATURESTORE_KAFKA_BOOTSTRAP``, which wins over the file's
``bootstrap.servers``. Values of secret keys (see ``is_secret``) are never shown: use
``redacted`` for any message that shows a client config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from featurestore.errors import ConfigError

SECRET_WORDS = ("password", "secret", "key", "token")


def default_cache_dir() -> Path:
    """The user's cache dir for featurestore (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "featurestore"


class Settings(BaseSettings):
    """Endpoints and paths; ``None`` means "take it from the local stack"."""

    model_config = SettingsConfigDict(env_prefix="FEATURESTORE_", extra="ignore")

    kafka_bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers, e.g. 127.0.0.1:9092; default the "
        "bootstrap.servers of kafka_config, else the local stack's.",
    )
    kafka_config: Path | None = Field(
        default=None,
        description="librdkafka client properties file (key=value lines, # comments) "
        "that every Kafka client gets: security.protocol, sasl.*, ssl.*, ...",
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
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO",
        description="Log level of `featurestore run` (any case). Messages and logs never "
        "quote a pii field's value or a secret, at DEBUG too.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then the project file, then defaults."""
        return (init_settings, env_settings, dotenv_settings, file_secret_settings,
                _ProjectSource(settings_cls))  # fmt: skip

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def local_dir(self) -> Path:
        return self.local_home or self.cache_dir / "local"

    @model_validator(mode="after")
    def _bootstrap_from_kafka_config(self) -> Settings:
        if self.kafka_bootstrap is None and self.kafka_config is not None:
            self.kafka_bootstrap = read_client_properties(self.kafka_config).get(
                "bootstrap.servers"
            )
        return self

    def kafka_client_config(self) -> dict[str, str]:
        """What every Kafka client gets: the kafka_config file's settings, with
        bootstrap.servers from kafka_bootstrap (which wins) when that is set."""
        config = read_client_properties(self.kafka_config) if self.kafka_config else {}
        if self.kafka_bootstrap is not None:
            config["bootstrap.servers"] = self.kafka_bootstrap
        return config


class _ProjectSource(PydanticBaseSettingsSource):
    """The ``[settings]`` of the project file in use (`featurestore.project.current`)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ gives the whole table

    def __call__(self) -> dict[str, Any]:
        from featurestore.project import current

        project = current()
        return dict(project.settings) if project is not None else {}


def read_client_properties(path: Path) -> dict[str, str]:
    """A librdkafka client properties file: ``key=value`` per line, split at the first
    ``=`` and stripped of surrounding blanks; blank lines and ``#`` comments skipped; a
    key given twice keeps its last value (as Java Properties do). A line is never
    quoted back in an error: it may hold a secret."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the Kafka client properties {path} (FEATURESTORE_KAFKA_CONFIG): "
            f"{exc.strerror or exc}; point FEATURESTORE_KAFKA_CONFIG at a readable file of "
            "key=value lines."
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"the Kafka client properties {path} are not UTF-8 text; write key=value lines."
        ) from exc
    config: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            what = "has no '='" if not sep else "has no key before '='"
            raise ConfigError(
                f"{path}, line {number}: the line {what}; write one librdkafka setting "
                "per line as key=value, e.g. security.protocol=SASL_SSL."
            )
        config[key] = value.strip()
    return config


def is_secret(key: str) -> bool:
    """Whether a client setting's value must never be logged or printed."""
    lowered = key.lower()
    return any(word in lowered for word in SECRET_WORDS)


def redacted(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with the value of every secret key replaced by ``***``."""
    return {key: "***" if is_secret(key) else value for key, value in config.items()}

"""Consumer definitions: what one consumer process reads, enforces and writes.

A definition is a TOML file in ``consumers/`` (``featurestore run consumers/payments``
reads ``consumers/payments.toml``), validated here so that a mistake is reported with
the file, the key and what to write instead, before anything connects anywhere.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from featurestore.contracts.contract import parse_duration_ms
from featurestore.errors import ConfigError, ContractError
from featurestore.features.definitions import Entity, FeatureService, FeatureView
from featurestore.monitor.config import Monitoring


class OfflineSink(BaseModel):
    """Validated events to Parquet, hive-partitioned by event date."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    path: str | None = Field(
        default=None,
        description="Root of the offline store; default $FEATURESTORE_OFFLINE_PATH or the "
        "local stack's. Local paths and URIs that pyarrow filesystems know (s3://, gs://).",
    )


class OnlineSink(BaseModel):
    """Feature views' tiles to Redis."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    redis_url: str | None = Field(
        default=None,
        description="Default $FEATURESTORE_REDIS_URL or the local stack's. redis://, "
        "rediss:// (TLS), redis+sentinel://host:port/service, redis+cluster://host:port,...",
    )
    prefix: str = Field(default="fs", description="Prefix of every key the store writes.")
    allow_eviction: bool = Field(
        default=False,
        description="Accept a Redis whose maxmemory-policy may evict keys (refused by "
        "default: evicted tiles make counts and sums drop silently).",
    )


class Sinks(BaseModel):
    model_config = ConfigDict(extra="forbid")
    offline: OfflineSink = OfflineSink()
    online: OnlineSink = OnlineSink()


class ConsumerDefinition(BaseModel):
    """One consumer: topics in, one contract enforced, sinks out."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    topics: Annotated[list[str], Field(min_length=1)]
    subject: str = Field(description="The contract's registry subject, e.g. payments-value.")
    contract_version: int | Literal["latest"] = Field(
        default="latest", description="Reader schema: the latest version at start, or pinned."
    )
    group: str | None = Field(default=None, description="Consumer group; default fs-<name>.")
    instance_id: str | None = Field(
        default=None,
        description="Stable name of this process in its group (static membership, "
        "group.instance.id): a restart under the same name takes its partitions back at "
        "once and aborts the transaction its crashed predecessor left open. Give each "
        "running process its own (e.g. the pod name); `run --instance-id` sets it.",
    )
    batch_size: Annotated[int, Field(gt=0, le=1_000_000)] = 10_000
    batch_wait_ms: Annotated[int, Field(gt=0, le=600_000)] = 500
    dlq_topic: str | None = Field(
        default=None, description="Dead-letter topic; default <source topic>.dlq per topic."
    )
    max_future_skew: str | None = Field(
        default=None, description="Overrides the contract's max_future_skew (e.g. 5m)."
    )
    retention: str | None = Field(
        default=None,
        description="Events older than this are LATE_EVENT; default the contract's max_age.",
    )
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    sinks: Sinks = Sinks()
    monitoring: Monitoring = Monitoring()
    entities: list[Entity] = Field(default_factory=list)
    views: list[FeatureView] = Field(
        default_factory=list, description="Feature views computed from this consumer's events."
    )
    feature_services: list[FeatureService] = Field(
        default_factory=list,
        description="Named lists of view:feature references, served by name (any view "
        "of any definition the server loads).",
    )
    kafka: dict[str, str | int | bool] = Field(
        default_factory=dict,
        description="Extra librdkafka settings (security.protocol, sasl.*, ssl.*).",
    )

    @field_validator("max_future_skew", "retention")
    @classmethod
    def _is_a_duration(cls, value: str | None, info: ValidationInfo) -> str | None:
        try:
            parse_duration_ms(str(info.field_name), value)
        except ContractError:
            raise ValueError(
                f'{value!r} is not a duration; write e.g. "30s", "5m", "1h", "7d"'
            ) from None
        return value

    @model_validator(mode="after")
    def _dlq_is_not_a_source(self) -> ConsumerDefinition:
        if self.dlq_topic is not None and self.dlq_topic in self.topics:
            raise ValueError(f"dlq_topic '{self.dlq_topic}' is also a source topic")
        return self

    @model_validator(mode="after")
    def _views_fit(self) -> ConsumerDefinition:
        entities = {e.name for e in self.entities}
        seen: set[tuple[str, int]] = set()
        for view in self.views:
            if view.source != self.subject:
                raise ValueError(
                    f"view {view.name!r} reads {view.source!r}, but this consumer enforces "
                    f"{self.subject!r}; declare the view in that subject's consumer"
                )
            if view.entity not in entities:
                raise ValueError(
                    f"view {view.name!r} uses entity {view.entity!r}; declare it under "
                    f"[[entities]] (declared: {', '.join(sorted(entities)) or 'none'})"
                )
            if (view.name, view.version) in seen:
                raise ValueError(f"view {view.name!r} version {view.version} is declared twice")
            seen.add((view.name, view.version))
        return self

    @property
    def join_keys(self) -> dict[str, list[str]]:
        return {e.name: list(e.join_keys) for e in self.entities}

    @property
    def group_id(self) -> str:
        return self.group or f"fs-{self.name}"

    def dlq_for(self, topic: str) -> str:
        return self.dlq_topic or f"{topic}.dlq"


def resolve_path(where: str | Path) -> Path:
    """``consumers/payments``, ``consumers/payments.toml`` or a directory holding
    ``consumer.toml``: the definition file meant; in a project (`featurestore.project`),
    also a name among its definitions (``featurestore run payments``)."""
    from featurestore.project import Project

    path = Path(where)
    candidates = [path, path.with_suffix(".toml"), path / "consumer.toml"]
    project = Project.find() if not path.is_absolute() else None
    if project is not None:
        named = project.definitions / path
        candidates += [named, named.with_suffix(".toml"), named / "consumer.toml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no consumer definition at {path} (tried {', '.join(map(str, candidates))}); see "
        "consumers/payments.toml for an example."
    )


def load_definition(where: str | Path) -> ConsumerDefinition:
    path = resolve_path(where)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    try:
        return ConsumerDefinition.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc


def load_definitions(where: str | Path) -> list[ConsumerDefinition]:
    """Every definition in a folder (``*.toml``), or the one a path names."""
    path = Path(where)
    if path.is_dir() and not (path / "consumer.toml").is_file():
        found = sorted(path.glob("*.toml"))
        if not found:
            raise ConfigError(f"no consumer definitions (*.toml) in {path}")
        return [load_definition(p) for p in found]
    return [load_definition(path)]

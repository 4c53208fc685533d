"""Feature definitions: entities and versioned feature views, validated with pydantic.

A feature view is (name, version, source subject, entity, aggregations x windows,
allowed lateness, TTL, owner, description, tags). Every feature of a view is one
aggregation of one source column over one window, named ``<column>_<function>_<window>``
(``amount_sum_1h``) and referenced from outside as ``<view>:<feature>``.

Windows are written ``"1h"`` (the tile is chosen: see `default_tile`) or
``"7d/1h"`` (length / tile). Invariants a valid view holds:
- every tile divides its window (checked by `Window`);
- ``retention = longest window + allowed_lateness``: tiles are kept that long after
  the partition's watermark, events older than the watermark minus it are LATE_EVENT;
- the online key's TTL is at least the retention, so a read never misses a tile that
  a window still needs;
- numeric-only aggregations (sum, mean, min, max, std) are checked against the
  contract's field types when a consumer starts (`FeatureView.check_columns`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from featurestore.errors import ConfigError, FeatureStoreError
from featurestore.features.aggregates import NUMERIC_ONLY, Aggregation, Value
from featurestore.features.windows import Window, duration_ms

NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000))


def default_tile(length_ms: int) -> int:
    """The coarsest of 1d, 1h, 1m, 1s that divides the window at least 10 times."""
    for _, unit in _UNITS:
        if length_ms % unit == 0 and length_ms // unit >= 10:
            return unit
    return 1_000 if length_ms % 1_000 == 0 and length_ms >= 1_000 else 1


def parse_window(spec: str) -> Window:
    """``"1h"`` or ``"7d/1h"`` (length / tile) as a `Window`."""
    length, _, tile = spec.partition("/")
    length_ms = duration_ms(length.strip(), what="window")
    tile_ms = duration_ms(tile.strip(), what="tile") if tile else default_tile(length_ms)
    return Window(length_ms, tile_ms)


class Entity(BaseModel):
    """What features describe (a card, a user): its join keys in events and lookups."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Annotated[str, Field(pattern=NAME)]
    join_keys: Annotated[list[Annotated[str, Field(pattern=NAME)]], Field(min_length=1)]
    description: str = ""


class Aggregate(BaseModel):
    """Functions of one source column over windows: a grid of features."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    column: Annotated[str, Field(pattern=NAME)]
    functions: Annotated[list[Aggregation], Field(min_length=1)]
    windows: Annotated[list[str], Field(min_length=1)]

    @field_validator("windows")
    @classmethod
    def _windows_parse(cls, windows: list[str]) -> list[str]:
        for spec in windows:
            try:
                parse_window(spec)
            except ConfigError as exc:
                raise ValueError(f"window {spec!r}: {exc}") from None
        return windows


class Drift(BaseModel):
    """When a view's features (and the input fields they read) have drifted from the
    view's training baseline (`featurestore monitor baseline`): thresholds on PSI and
    KS for numbers, Jensen-Shannon for text, and the rise of the null rate; judged over
    the last ``window`` once it holds ``min_count`` values. ``thresholds`` overrides
    them per feature or field, e.g. ``{amount_sum_1h = {psi = 0.3}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    psi: float = Field(default=0.2, gt=0)
    ks: float = Field(default=0.2, gt=0, le=1)
    js: float = Field(default=0.1, gt=0, le=1)
    null_rate: float = Field(default=0.1, gt=0, le=1, description="Rise over the baseline's.")
    window: str = "15m"
    min_count: int = Field(default=200, ge=1)
    thresholds: dict[str, dict[str, float]] = Field(default_factory=dict)

    def threshold(self, name: str, statistic: str) -> float:
        value: float = self.thresholds.get(name, {}).get(statistic, getattr(self, statistic))
        return value

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        try:
            duration_ms(value)
        except FeatureStoreError:
            raise ValueError(f'{value!r} is not a duration; write e.g. "15m"') from None
        return value


@dataclass(frozen=True, slots=True)
class Feature:
    """One feature of a view: ``function`` of value ``column`` over ``window``."""

    name: str
    column: str
    function: Aggregation
    window: Window
    label: str  # the window as written before any "/tile", e.g. "1h"


class FeatureView(BaseModel):
    """A versioned set of windowed features of one entity, from one contract."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Annotated[str, Field(pattern=NAME)]
    version: Annotated[int, Field(ge=1)] = 1
    source: str = Field(description="Registry subject of the contract, e.g. payments-value.")
    entity: str = Field(description="Name of an entity declared beside the view.")
    aggregations: Annotated[list[Aggregate], Field(min_length=1)]
    allowed_lateness: str = "1h"
    ttl: str | None = Field(default=None, description="Online key TTL; default the retention.")
    owner: str = Field(description="Who is paged about this view (an address or team).")
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    drift: Drift = Field(default_factory=Drift)

    @field_validator("allowed_lateness", "ttl")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                duration_ms(value)
            except FeatureStoreError:
                raise ValueError(f'{value!r} is not a duration; write e.g. "1h"') from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FeatureView:
        names = [f.name for f in self.features]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"features declared twice: {doubled}")
        if self.ttl is not None and duration_ms(self.ttl) < self.retention_ms:
            raise ValueError(
                f"ttl {self.ttl} is shorter than the retention ({self.retention_ms} ms = "
                "longest window + allowed_lateness); online reads would miss tiles"
            )
        return self

    @cached_property
    def features(self) -> list[Feature]:
        out: list[Feature] = []
        for agg in self.aggregations:
            for spec in agg.windows:
                label = spec.partition("/")[0].strip()
                for fn in agg.functions:
                    name = f"{agg.column}_{fn}_{label}"
                    out.append(Feature(name, agg.column, fn, parse_window(spec), label))
        return out

    @cached_property
    def values(self) -> dict[str, Value]:
        """Source columns aggregated, each once; a sketch where any feature counts distinct."""
        distinct = {f.column for f in self.features if f.function == "distinct"}
        return {f.column: Value(f.column, f.column in distinct) for f in self.features}

    @cached_property
    def windows(self) -> list[Window]:
        return sorted({f.window for f in self.features}, key=lambda w: (w.tile_ms, w.length_ms))

    @cached_property
    def tiles_ms(self) -> list[int]:
        """Tile granularities stored for this view, finest first."""
        return sorted({w.tile_ms for w in self.windows})

    @cached_property
    def lateness_ms(self) -> int:
        return duration_ms(self.allowed_lateness)

    @cached_property
    def retention_ms(self) -> int:
        return max(w.length_ms for w in self.windows) + self.lateness_ms

    def retention_for(self, tile_ms: int) -> int:
        """How long tiles of one granularity are kept behind the watermark."""
        longest = max(w.length_ms for w in self.windows if w.tile_ms == tile_ms)
        return longest + self.lateness_ms

    @cached_property
    def ttl_ms(self) -> int:
        return duration_ms(self.ttl) if self.ttl is not None else self.retention_ms

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise ConfigError(
            f"view {self.name!r} has no feature {name!r}; it has "
            f"{', '.join(f.name for f in self.features)}"
        )

    def check_columns(self, types: Mapping[str, bool]) -> None:
        """Check sources against a contract: ``types`` maps each field to is-numeric."""
        for f in self.features:
            if f.column not in types:
                raise ConfigError(
                    f"view {self.name!r}: column {f.column!r} is not a field of {self.source}; "
                    f"fields are {', '.join(sorted(types))}"
                )
            if f.function in NUMERIC_ONLY and not types[f.column]:
                raise ConfigError(
                    f"view {self.name!r}: {f.function} of {f.column!r} needs a numeric field; "
                    "use count, last or distinct for other types"
                )


class FeatureService(BaseModel):
    """A saved list of feature references that one model reads, served by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Annotated[str, Field(pattern=NAME)]
    features: Annotated[list[str], Field(min_length=1)]
    owner: str = ""
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("features")
    @classmethod
    def _references(cls, features: list[str]) -> list[str]:
        for ref in features:
            try:
                parse_ref(ref)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        if len(set(features)) != len(features):
            raise ValueError("a feature is listed twice")
        return features


_REF = re.compile(r"^(?P<view>[A-Za-z_][A-Za-z0-9_]*)(?:@(?P<version>[0-9]+))?:(?P<feature>.+)$")


def parse_ref(ref: str) -> tuple[str, int | None, str]:
    """``"card_spend:amount_sum_1h"`` -> (view, None, feature); ``"card_spend@2:..."``
    names version 2. A clear error for anything else."""
    match = _REF.match(ref.strip())
    if match is None or not re.match(NAME, match["feature"]):
        raise ConfigError(
            f"{ref!r} is not a feature reference; write view:feature or view@version:feature"
        )
    version = match["version"]
    return match["view"], int(version) if version else None, match["feature"]

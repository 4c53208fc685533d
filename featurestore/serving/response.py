"""The answer to an online lookup: values, and per value its view version, freshness
and status, convertible to dict, Polars, Arrow, pandas and the HTTP body.

Status of each (entity row, view), shared by that view's values for that row:

    PRESENT    Redis holds the entity and its newest event is within the view's TTL
    NOT_FOUND  Redis holds nothing for the entity (never seen, or expired and deleted)
    EXPIRED    Redis still holds the entity, but its newest event is older than the
               view's TTL at the request time

Feast's names (`feast_body`, `feast_status`): EXPIRED is Feast's OUTSIDE_MAX_AGE, and a
PRESENT value that is null (a mean over an empty window) is Feast's NULL_VALUE.

Values are always the window values at the request time, whatever the status: a count
is 0 and a mean null when the window holds no event, so NOT_FOUND and EXPIRED values
are the empty window's (TTL is at least the longest window, so an expired entity's
windows are empty). Freshness is request time minus the newest event time of the
entity in that view, in seconds (null when nothing is held).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import polars as pl

from featurestore.online.layout import Rows
from featurestore.online.store import Lookup
from featurestore.serving.catalog import Resolved

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]
    import pyarrow as pa

PRESENT, NOT_FOUND, EXPIRED = "PRESENT", "NOT_FOUND", "EXPIRED"
# Feast's field statuses (its serving API's FieldStatus) beside ours.
OUTSIDE_MAX_AGE, NULL_VALUE = "OUTSIDE_MAX_AGE", "NULL_VALUE"
_FEAST_STATUS = {PRESENT: PRESENT, NOT_FOUND: NOT_FOUND, EXPIRED: OUTSIDE_MAX_AGE}
_NO_TIME = "1970-01-01T00:00:00Z"  # Feast's timestamp of a value with none (a join key)


def feast_status(status: str, value: Any) -> str:
    """Our status of a value in Feast's names (`PRESENT` of a null value: `NULL_VALUE`)."""
    if status == PRESENT and value is None:
        return NULL_VALUE
    return _FEAST_STATUS[status]


def _rfc3339(ms: int | None) -> str:
    """An event time as Feast's HTTP server writes it: UTC, milliseconds when any."""
    if ms is None:
        return _NO_TIME
    seconds, rest = divmod(ms, 1000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{rest:03d}Z" if rest else f"{text}Z"


@dataclass(frozen=True)
class ViewState:
    """One requested view version's state per entity row."""

    name: str
    version: int
    status: list[str]  # PRESENT / NOT_FOUND / EXPIRED per row
    freshness_s: list[float | None]  # seconds, None when nothing is held
    newest_event_ms: list[int | None]  # epoch ms, None when nothing is held


@dataclass(frozen=True)
class OnlineFeatures:
    """Feature values of a batch of entity rows at one request time, in request order.
    Values are plain Python lists; the Polars, Arrow and pandas forms are built only
    when asked for (`to_polars`)."""

    rows: Rows  # the join key columns, one row per entity row asked (`entities`: a frame)
    columns: dict[str, list[Any]]  # one list per requested feature, in request order
    types: dict[str, pl.DataType]  # each feature's Polars type
    resolved: Resolved
    views: tuple[ViewState, ...]  # per request of `resolved`
    at_ms: int

    @classmethod
    def of(cls, entities: Rows, resolved: Resolved, lookup: Lookup, at_ms: int) -> OnlineFeatures:
        # A few rows per view: plain Python, cheaper here than any frame operation.
        views = []
        for (view, _), found, newest in zip(
            resolved.requests, lookup.found, lookup.newest_event_ms, strict=True
        ):
            ages = [None if t is None else at_ms - t for t in newest]
            ttl_ms = view.ttl_ms
            status = [
                NOT_FOUND if not held else EXPIRED if age is not None and age > ttl_ms
                else PRESENT
                for held, age in zip(found, ages, strict=True)
            ]  # fmt: skip
            freshness = [None if a is None else a / 1000 for a in ages]
            views.append(ViewState(view.name, view.version, status, freshness, list(newest)))
        values, types = lookup.values, lookup.types
        columns = {name: values[key] for name, key in resolved.keys}
        named = {name: types[key] for name, key in resolved.keys}
        return cls(entities, columns, named, resolved, tuple(views), at_ms)

    @cached_property
    def values(self) -> pl.DataFrame:
        """The features as a frame, one column per requested feature."""
        return pl.DataFrame([pl.Series(name, column, dtype=self.types[name])
                             for name, column in self.columns.items()])  # fmt: skip

    @property
    def feature_names(self) -> list[str]:
        return [out.name for out in self.resolved.outputs]

    def to_polars(self, *, metadata: bool = False) -> pl.DataFrame:
        """Join keys, then the features; with ``metadata``, per view version
        ``<view>__version``, ``<view>__status`` and ``<view>__freshness_s`` columns."""
        frame = pl.concat([self.entities, self.values], how="horizontal")
        if metadata:
            extra = []
            for state in self.views:
                label = (
                    state.name
                    if self._one_version(state.name)
                    else f"{state.name}_v{state.version}"
                )
                extra += [
                    pl.repeat(state.version, self.values.height, dtype=pl.Int64, eager=True).alias(
                        f"{label}__version"
                    ),
                    pl.Series(f"{label}__status", state.status, dtype=pl.String),
                    pl.Series(f"{label}__freshness_s", state.freshness_s, dtype=pl.Float64),
                ]
            frame = frame.with_columns(extra)
        return frame

    def to_dict(self) -> dict[str, list[Any]]:
        """Join keys and feature names to lists of values, as Feast's ``to_dict``."""
        return {**self._entity_columns(), **self.columns}

    def to_arrow(self) -> pa.Table:
        return self.to_polars().to_arrow()

    def to_df(self) -> pd.DataFrame:
        """Join keys then features as a pandas frame, as Feast's ``to_df``."""
        return self.to_pandas()

    def to_pandas(self) -> pd.DataFrame:
        return self.to_polars().to_pandas()

    def status(self, name: str, *, feast: bool = False) -> list[str]:
        """The status of one output feature per entity row; with ``feast``, in Feast's
        names (`feast_status`: OUTSIDE_MAX_AGE, NULL_VALUE)."""
        status = self._state_of(name).status
        if feast:
            return [feast_status(s, v) for s, v in zip(status, self.columns[name], strict=True)]
        return list(status)

    def freshness(self, name: str) -> list[float | None]:
        return list(self._state_of(name).freshness_s)

    def version(self, name: str) -> int:
        return self._state_of(name).version

    def body(self) -> dict[str, Any]:
        """The HTTP response: column-oriented, one entry per feature with its values,
        statuses, freshness and view version."""
        at = datetime.fromtimestamp(self.at_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
        features = []
        for out in self.resolved.outputs:
            state = self.views[out.request]
            features.append(
                {
                    "name": out.name,
                    "ref": out.ref,
                    "view": state.name,
                    "version": state.version,
                    "values": self.columns[out.name],
                    "statuses": state.status,
                    "freshness_seconds": state.freshness_s,
                }
            )
        body: dict[str, Any] = {
            "at": at,
            "entities": self._entity_columns(),
            "features": features,
        }
        if self.resolved.service is not None:
            body["feature_service"] = self.resolved.service
        return body

    def feast_body(self, *, versions: bool = False) -> dict[str, Any]:
        """The response of Feast's ``POST /get-online-features``: ``metadata.feature_names``
        (the join keys, then the features) and one result per name with its values,
        statuses (Feast's names, `feast_status`) and event timestamps (the entity's
        newest event in that view; a join key's are Feast's zero time). With
        ``versions``, ``metadata.feature_view_metadata`` names each view version read."""
        keys = self._entity_columns()
        results = [{"values": values, "statuses": [PRESENT] * len(values),
                    "event_timestamps": [_NO_TIME] * len(values)}
                   for values in keys.values()]  # fmt: skip
        times = [[_rfc3339(ms) for ms in state.newest_event_ms] for state in self.views]
        for out in self.resolved.outputs:
            state, values = self.views[out.request], self.columns[out.name]
            statuses = [feast_status(s, v) for s, v in zip(state.status, values, strict=True)]
            results.append({"values": values, "statuses": statuses,
                            "event_timestamps": times[out.request]})  # fmt: skip
        metadata: dict[str, Any] = {"feature_names": [*keys, *self.feature_names]}
        if versions:
            metadata["feature_view_metadata"] = [
                {"name": state.name, "version": state.version} for state in self.views
            ]
        return {"metadata": metadata, "results": results}

    def _entity_columns(self) -> dict[str, list[Any]]:
        if isinstance(self.rows, pl.DataFrame):
            return self.rows.to_dict(as_series=False)
        return {k: list(v) for k, v in self.rows.items()}

    @cached_property
    def entities(self) -> pl.DataFrame:
        """The join key columns as a frame, one row per entity row asked."""
        if isinstance(self.rows, pl.DataFrame):
            return self.rows
        return pl.DataFrame(dict(self.rows))

    def _state_of(self, name: str) -> ViewState:
        for out in self.resolved.outputs:
            if out.name == name:
                return self.views[out.request]
        raise KeyError(f"{name!r} was not asked for; asked: {', '.join(self.feature_names)}")

    def _one_version(self, view: str) -> bool:
        return sum(state.name == view for state in self.views) == 1

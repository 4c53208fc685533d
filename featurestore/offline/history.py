"""Point-in-time retrieval: feature values as of each training row's own timestamp.

`get_historical_features(entity_df, features, ...)` recomputes every requested window
feature from the validated events in the offline store with the one window engine
(`featurestore.features.aggregates.as_of`): a row at time t sees exactly the events of
its entity with event time in ``[floor_g(t) - W + g, t]``, which is what an online read
at t returns. No leakage (nothing after t), no dropped or reordered rows, duplicate
(key, timestamp) rows kept, entities without events get empty-window values.

Memory: events are scanned lazily, only for the entities and the time span the rows
need (longest window before the earliest row up to the latest row), and rows are
processed in chunks, so the working set is one chunk's rows and their entities' tiles,
not the whole history.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import polars as pl

from featurestore.errors import ConfigError
from featurestore.features.aggregates import as_of, feature_column, tile_partials
from featurestore.features.definitions import Feature, FeatureView, split_ref
from featurestore.offline.events import scan_events

Progress = Callable[[int], None]


def as_polars(frame: Any) -> pl.DataFrame:
    """A Polars frame from Polars, pandas or Arrow input."""
    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, pl.LazyFrame):
        return frame.collect()
    module = type(frame).__module__.split(".")[0]
    if module == "pandas":
        return pl.from_pandas(frame)
    if module == "pyarrow":
        converted = pl.from_arrow(frame)
        if isinstance(converted, pl.DataFrame):
            return converted
    raise ConfigError(
        f"entity_df is a {type(frame).__name__}; pass a Polars or pandas DataFrame or an "
        "Arrow table"
    )


def get_historical_features(
    entity_df: Any,
    features: Sequence[str],
    *,
    views: Mapping[str, FeatureView],
    join_keys: Mapping[str, list[str]],
    offline_root: str,
    timestamp_column: str = "event_timestamp",
    event_time: Mapping[str, str] | str = "ts",
    chunk_rows: int = 200_000,
    full_feature_names: bool = False,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """``entity_df`` (join keys + ``timestamp_column``) with one column per feature.

    ``features`` are ``view:feature`` references; ``views`` maps view names to
    definitions, ``join_keys`` entity names to their keys, ``event_time`` gives each
    source subject's event-time field. Output columns are the feature names, or
    ``view__feature`` with ``full_feature_names`` (required when two views share a name).
    """
    rows = as_polars(entity_df)
    if timestamp_column not in rows.columns:
        raise ConfigError(
            f"entity_df has no {timestamp_column!r} column (it has {rows.columns}); pass "
            "timestamp_column= naming the time each row's features are wanted at"
        )
    wanted = _resolve(features, views)
    names = [f"{v}__{f.name}" if full_feature_names else f.name for v, f in wanted]
    if len(set(names)) != len(names):
        raise ConfigError("two requested features share a name; pass full_feature_names=True")
    out: list[pl.DataFrame] = []
    for start in range(0, max(rows.height, 1), chunk_rows):
        chunk = rows.slice(start, chunk_rows)
        columns = [chunk]
        by_view: dict[str, list[Feature]] = {}
        for view_name, feature in wanted:
            by_view.setdefault(view_name, []).append(feature)
        computed: dict[tuple[str, str], pl.Series] = {}
        for view_name, view_features in by_view.items():
            view = views[view_name]
            keys = _keys(view, join_keys, chunk)
            subject_time = event_time if isinstance(event_time, str) else event_time[view.source]
            values = _view_values(view, view_features, chunk, keys, timestamp_column,
                                  offline_root, subject_time)  # fmt: skip
            computed.update({(view_name, s.name): s for s in values})
            if progress is not None:
                progress(chunk.height)
        columns.append(
            pl.DataFrame(
                [computed[(v, f.name)].alias(n) for (v, f), n in zip(wanted, names, strict=True)]
            )
        )
        out.append(pl.concat(columns, how="horizontal"))
    return pl.concat(out) if out else rows


def _resolve(
    features: Sequence[str], views: Mapping[str, FeatureView]
) -> list[tuple[str, Feature]]:
    wanted = []
    for ref in features:
        view_name, feature = split_ref(ref)
        if view_name not in views:
            raise ConfigError(
                f"no feature view {view_name!r}; known views: {', '.join(sorted(views))}"
            )
        wanted.append((view_name, views[view_name].feature(feature)))
    return wanted


def _keys(view: FeatureView, join_keys: Mapping[str, list[str]], rows: pl.DataFrame) -> list[str]:
    keys = join_keys.get(view.entity)
    if keys is None:
        raise ConfigError(f"no join keys for entity {view.entity!r} of view {view.name!r}")
    missing = [k for k in keys if k not in rows.columns]
    if missing:
        raise ConfigError(f"entity_df lacks the join keys {missing} of entity {view.entity!r}")
    return keys


def _view_values(  # noqa: PLR0917 - private, called once
    view: FeatureView,
    features: list[Feature],
    rows: pl.DataFrame,
    keys: list[str],
    at: str,
    offline_root: str,
    event_time: str,
) -> list[pl.Series]:
    """One view's requested features for a chunk of rows."""
    probe = rows.select(*keys, pl.col(at))
    times = probe.get_column(at)
    if isinstance(times.dtype, pl.Datetime) and times.dtype.time_zone is None:
        probe = probe.with_columns(pl.col(at).dt.replace_time_zone("UTC"))
    longest = max(f.window.length_ms for f in features)
    events = _events_for(view, features, probe, keys, at, offline_root, event_time, longest)
    out: list[pl.Series] = []
    for window in {f.window for f in features}:
        group = [f for f in features if f.window == window]
        aggs: dict[str, list[Any]] = {}
        for f in group:
            aggs.setdefault(f.column, []).append(f.function)
        values = {c: view.values[c] for c in aggs}
        tiles = tile_partials(
            events, keys, event_time, values, window.tile_ms, offset_col="_offset"
        )
        result = as_of(events, probe, keys, event_time, window, aggs=aggs, at=at,
                       value_cols=values, offset_col="_offset", tiles=tiles)  # fmt: skip
        out += [result[feature_column(f.column, f.function)].alias(f.name) for f in group]
    return out


def _events_for(  # noqa: PLR0917 - private, called once
    view: FeatureView,
    features: list[Feature],
    probe: pl.DataFrame,
    keys: list[str],
    at: str,
    offline_root: str,
    event_time: str,
    longest_ms: int,
) -> pl.DataFrame:
    """The validated events these rows can see: their entities, within the time span."""
    columns = {*keys, event_time, "_offset", *(f.column for f in features)}
    times = probe.select(pl.col(at).min().alias("lo"), pl.col(at).max().alias("hi")).row(0)
    scan = scan_events(offline_root, view.source)
    wanted_keys = probe.select(keys).unique()
    lazy = scan.select(sorted(columns)).join(wanted_keys.lazy(), on=keys, how="semi")
    if times[0] is not None:
        lo, hi = times
        if isinstance(lo, int):
            lo_t = pl.from_epoch(pl.lit(lo - longest_ms), time_unit="ms").dt.replace_time_zone(
                "UTC"
            )
            hi_t = pl.from_epoch(pl.lit(hi), time_unit="ms").dt.replace_time_zone("UTC")
        else:
            lo_t = pl.lit(lo) - pl.duration(milliseconds=longest_ms)
            hi_t = pl.lit(hi)
        lazy = lazy.filter(pl.col(event_time).is_between(lo_t, hi_t))
    return lazy.collect()


def _utc_ms(ms: int) -> pl.Expr:
    return pl.from_epoch(pl.lit(ms), time_unit="ms").dt.replace_time_zone("UTC")

"""Point-in-time retrieval: feature values as of each training row's own timestamp.

`get_historical_features(entity_df, features, ...)` recomputes every requested window
feature from the validated events in the offline store with the one window engine
(`featurestore.features.aggregates.as_of`): a row at time t sees exactly the events of
its entity with event time in ``[floor_g(t) - W + g, t]``, which is what an online read
at t returns. No leakage (nothing after t), no dropped or reordered rows, duplicate
(key, timestamp) rows kept, entities without events get empty-window values.

Memory: events are scanned lazily, once per source subject and chunk of rows, only for
the chunk's entities and the time span it needs (longest window before its earliest row
up to its latest; whole days of partitions are skipped), and tiles are computed once per
granularity; so the working set is one chunk's rows and their entities' events and
tiles, not the whole history.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import polars as pl

from featurestore.errors import ConfigError
from featurestore.features.aggregates import (
    PARTS,
    TILE,
    Aggregation,
    Value,
    epoch_ms,
    feature_column,
    partial_column,
    tile_partials,
)
from featurestore.features.definitions import Feature, FeatureView, parse_ref
from featurestore.features.point_in_time import as_of
from featurestore.features.windows import Window
from featurestore.offline.events import scan_events

Progress = Callable[[int], None]  # called with the number of rows just finished
_ORDER = "__fs_input_order"


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

    ``features`` are ``view:feature`` references (``view@2:feature`` for a version:
    its own definition recomputes it, so a training set can match any version served).
    ``views`` maps view names (and ``name@version``) to definitions, ``join_keys``
    entity names to their keys, ``event_time`` gives each source subject's event-time
    field. Output columns are the feature names, or ``view__feature`` with
    ``full_feature_names`` (required when two views share a name).
    """
    rows = as_polars(entity_df)
    if _ORDER in rows.columns:
        raise ConfigError(f"entity_df has a column named {_ORDER!r}; rename it")
    if timestamp_column not in rows.columns:
        raise ConfigError(
            f"entity_df has no {timestamp_column!r} column (it has {rows.columns}); pass "
            "timestamp_column= naming the time each row's features are wanted at"
        )
    if not features:
        raise ConfigError("no features requested; pass view:feature references")
    wanted = _resolve(features, views)
    names = [f"{v.replace('@', '_v')}__{f.name}" if full_feature_names else f.name
             for v, f in wanted]  # fmt: skip
    if len(set(names)) != len(names):
        raise ConfigError("two requested features share a name; pass full_feature_names=True")
    groups: dict[tuple[str, tuple[str, ...]], list[tuple[str, Feature]]] = {}
    for view_name, feature in wanted:
        view = views[view_name]
        keys = tuple(_keys(view, join_keys, rows))
        groups.setdefault((view.source, keys), []).append((view_name, feature))
    # Chunks of rows sorted by entity: each chunk's entities (and so its events and
    # tiles) are mostly its own, so the history is read and tiled about once in all.
    # The input order is restored at the end.
    first_keys = list(next(iter(groups))[1])
    ordered = rows.with_row_index(_ORDER).sort(first_keys, maintain_order=True)
    out: list[pl.DataFrame] = []
    for start in range(0, max(rows.height, 1), chunk_rows):
        chunk = ordered.slice(start, chunk_rows)
        computed: dict[tuple[str, str], pl.Series] = {}
        for (source, keys), refs in groups.items():
            subject_time = event_time if isinstance(event_time, str) else event_time[source]
            computed |= _source_values(source, list(keys), refs, chunk, timestamp_column,
                                       offline_root, subject_time)  # fmt: skip
        columns = [computed[(v, f.name)].alias(n) for (v, f), n in zip(wanted, names, strict=True)]
        out.append(chunk.hstack(columns))
        if progress is not None:
            progress(chunk.height)
    return pl.concat(out).sort(_ORDER).drop(_ORDER)


def _reached(  # noqa: PLR0917 - private
    events: pl.DataFrame,
    probe: pl.DataFrame,
    keys: list[str],
    at: str,
    event_time: str,
    window: Window,
) -> pl.DataFrame:
    """The events some row's ``window`` can see, whole tiles kept. Window starts never
    decrease with the row's time, so of the rows at or after an event (same entity), the
    first one reaches furthest back: if its window does not reach the event's tile, no
    row's window does."""
    mine = events.with_columns(epoch_ms(events.schema, event_time).alias("__e")).sort("__e")
    rows = probe.select(*keys, epoch_ms(probe.schema, at).alias("__r")).sort("__r")
    joined = mine.join_asof(rows, left_on="__e", right_on="__r", by=keys, strategy="forward",
                            check_sortedness=False)  # fmt: skip
    reach = window.tile_expr(pl.col("__e")) >= window.first_tile_expr(pl.col("__r"))
    return joined.filter(reach).drop("__e", "__r")


def _resolve(
    features: Sequence[str], views: Mapping[str, FeatureView]
) -> list[tuple[str, Feature]]:
    wanted = []
    for ref in features:
        name, version, feature = parse_ref(ref)
        view_name = name if version is None else f"{name}@{version}"
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


def _source_values(  # noqa: PLR0917 - private, called once
    source: str,
    keys: list[str],
    refs: list[tuple[str, Feature]],
    rows: pl.DataFrame,
    at: str,
    offline_root: str,
    event_time: str,
) -> dict[tuple[str, str], pl.Series]:
    """Every requested feature of one source subject for a chunk of rows: the events are
    scanned once, tiles computed once per granularity, then `as_of` per window."""
    probe = rows.select(*keys, pl.col(at))
    times = probe.get_column(at)
    if isinstance(times.dtype, pl.Datetime) and times.dtype.time_zone is None:
        probe = probe.with_columns(pl.col(at).dt.replace_time_zone("UTC"))
    features = [f for _, f in refs]
    longest = max(f.window.length_ms for f in features)
    span = probe.select(epoch_ms(probe.schema, at).min().alias("lo"),
                        epoch_ms(probe.schema, at).max().alias("hi")).row(0)  # fmt: skip
    columns = list(dict.fromkeys([*keys, event_time, "_offset", *(f.column for f in features)]))
    between = None if span[0] is None else (span[0] - longest, span[1])
    scan = scan_events(offline_root, source, columns=columns, event_time=event_time,
                       between=between, entities=probe.select(keys).unique())  # fmt: skip
    try:
        events = scan.select(columns).collect(engine="streaming")
    except pl.exceptions.ComputeError as exc:
        if "expanded paths were empty" not in str(exc):
            raise
        raise ConfigError(
            f"no events of {source!r} under {offline_root}: run its consumer "
            "(`featurestore run consumers/...`) or pass the offline store's root"
        ) from None
    out: dict[tuple[str, str], pl.Series] = {}
    for tile_ms in sorted({f.window.tile_ms for f in features}):
        mine = [(v, f) for v, f in refs if f.window.tile_ms == tile_ms]
        distinct = {f.column for _, f in mine if f.function == "distinct"}
        values = {f.column: Value(f.column, f.column in distinct) for _, f in mine}
        reach = Window(max(f.window.length_ms for _, f in mine), tile_ms)
        reached = _reached(events, probe, keys, at, event_time, reach)
        tiles = tile_partials(reached, keys, event_time, values, tile_ms, offset_col="_offset")
        for window in {f.window for _, f in mine}:
            aggs: dict[str, list[Aggregation]] = {}
            for _, f in mine:
                if f.window == window and f.function not in aggs.get(f.column, []):
                    aggs.setdefault(f.column, []).append(f.function)
            # Only this window's values: fewer columns gathered, fewer sketches hashed.
            own = {c: values[c] for c in aggs}
            parts = [partial_column(c, part) for c, value in own.items()
                     for part in (*PARTS, *(["sketch"] if value.distinct else []))]  # fmt: skip
            result = as_of(reached, probe, keys, event_time, window, aggs=aggs, at=at,
                           value_cols=own, offset_col="_offset",
                           tiles=tiles.select(*keys, TILE, *parts))  # fmt: skip
            for view_name, f in mine:
                if f.window == window:
                    out[(view_name, f.name)] = result[feature_column(f.column, f.function)]
    return out

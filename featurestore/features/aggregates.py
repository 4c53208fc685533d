"""Mergeable tile partials and window values: the one window engine, over Polars frames.

This module owns how events become per-(entity, tile) partials, how partials merge,
and how a window's feature values are read from them. The same code serves online
reads (`window_values` at the request time), streaming/backfill updates
(`tile_partials` then `merge_partials`) and offline point-in-time rows (`as_of`).

Partial columns, per value name ``v`` (see `partial_column`)::

    v__count  Int64    non-null values in the tile
    v__sum    Float64  sum of values          (0.0 when count is 0)
    v__sumsq  Float64  sum of squared values  (0.0 when count is 0)
    v__min    Float64  minimum                (null when count is 0)
    v__max    Float64  maximum                (null when count is 0)
    v__last       Float64  value of the latest event (null when count is 0)
    v__last_time  Int64    its event time
    v__last_offset Int64   its source offset

Invariants:
- a partial frame has one row per (entity..., ``tile``) and ``tile = floor(t / g)``;
- null values are ignored by every aggregate (they are absent, not zero);
- "latest" means the highest (event time, offset); offsets are compared alone, which
  is meaningful because an entity's events all live on one Kafka partition;
- merging is commutative and associative: counts and sums add, min/max combine, last
  picks the highest (time, offset);
- the window at t is defined in `featurestore.features.windows`: event times in
  ``[floor_g(t) - W + g, t]``. `window_values` merges the window's tiles and assumes
  they hold no event later than t (online, such events have not arrived yet);
  `as_of` filters events to the window first, so it is exact for any t;
- `as_of` computes via the same `tile_partials` and the same combining and finishing
  code as `window_values`, so both give the same numbers. Float caveat: sums are
  taken within a tile in (time, offset) order and then across tiles in tile order on
  both paths, but Polars may sum in a different association (SIMD, pairwise), so
  non-integer values can differ in the last bits from a sequential Python sum;
  integer-valued floats below 2**53 are exact everywhere.

Empty window: count and sum are 0; mean, min, max, std and last are null. std is the
sample standard deviation sqrt((sumsq - sum**2/n) / (n - 1)), null below 2 events and
clamped at 0 against rounding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import polars as pl

from featurestore.errors import ConfigError
from featurestore.features.windows import Window

Aggregation = Literal["count", "sum", "mean", "min", "max", "std", "last"]
AGGREGATIONS: tuple[Aggregation, ...] = get_args(Aggregation)

TILE = "tile"
_ROW = "__row"
_PARTS = ("count", "sum", "sumsq", "min", "max", "last", "last_time", "last_offset")


def partial_column(name: str, part: str) -> str:
    """Name of one partial column of value ``name``, e.g. ``amount__sumsq``."""
    return f"{name}__{part}"


def feature_column(name: str, agg: Aggregation) -> str:
    """Name of a finished window value, e.g. ``amount__mean``."""
    return f"{name}__{agg}"


def value_names(partials: pl.DataFrame) -> list[str]:
    """Value names present in a partial frame (those with a ``__count`` column)."""
    suffix = "__count"
    return [c.removesuffix(suffix) for c in partials.columns if c.endswith(suffix)]


def _epoch_ms(frame: pl.DataFrame, column: str) -> pl.Expr:
    """An integer-milliseconds expression for a time column (Int or Datetime)."""
    dtype = frame.schema[column]
    if isinstance(dtype, pl.Datetime):
        return pl.col(column).dt.epoch("ms")
    if dtype.is_integer():
        return pl.col(column).cast(pl.Int64)
    raise ConfigError(
        f"time column {column!r} has type {dtype}; use milliseconds since the epoch "
        "(an integer) or a Datetime"
    )


def tile_partials(
    events: pl.DataFrame,
    entity: list[str],
    time_col: str,
    value_cols: Mapping[str, str],
    tile_ms: int,
    *,
    offset_col: str = "offset",
) -> pl.DataFrame:
    """One row of partials per entity x tile, for each value name -> source column."""
    if tile_ms <= 0:
        raise ConfigError(f"tile {tile_ms} ms must be greater than 0; use e.g. '1m'")
    ordered = events.select(
        *[pl.col(c) for c in entity],
        _epoch_ms(events, time_col).alias("__t"),
        pl.col(offset_col).cast(pl.Int64).alias("__o"),
        *[pl.col(src).cast(pl.Float64).alias(f"__v_{name}") for name, src in value_cols.items()],
    ).sort("__t", "__o", maintain_order=True)
    aggs: list[pl.Expr] = []
    for name in value_cols:
        v = pl.col(f"__v_{name}")
        present = v.is_not_null()
        aggs += [
            v.count().cast(pl.Int64).alias(partial_column(name, "count")),
            v.sum().alias(partial_column(name, "sum")),
            (v * v).sum().alias(partial_column(name, "sumsq")),
            v.min().alias(partial_column(name, "min")),
            v.max().alias(partial_column(name, "max")),
            v.drop_nulls().last().alias(partial_column(name, "last")),
            pl.col("__t").filter(present).last().alias(partial_column(name, "last_time")),
            pl.col("__o").filter(present).last().alias(partial_column(name, "last_offset")),
        ]
    return (
        ordered.with_columns(pl.col("__t").floordiv(tile_ms).alias(TILE))
        .group_by([*entity, TILE], maintain_order=True)
        .agg(aggs)
        .sort([*entity, TILE])
    )


def _combine(frame: pl.DataFrame, keys: list[str], names: Sequence[str]) -> pl.DataFrame:
    """Merge partial rows sharing ``keys``; rows are combined in frame order."""
    aggs: list[pl.Expr] = []
    for name in names:
        col = {part: pl.col(partial_column(name, part)) for part in _PARTS}
        by = [col["last_time"], col["last_offset"]]
        aggs += [
            col["count"].sum().alias(partial_column(name, "count")),
            col["sum"].sum().alias(partial_column(name, "sum")),
            col["sumsq"].sum().alias(partial_column(name, "sumsq")),
            col["min"].min().alias(partial_column(name, "min")),
            col["max"].max().alias(partial_column(name, "max")),
            *[
                col[part].sort_by(by, nulls_last=False).last().alias(partial_column(name, part))
                for part in ("last", "last_time", "last_offset")
            ],
        ]
    return frame.group_by(keys, maintain_order=True).agg(aggs)


def merge_partials(
    partials: pl.DataFrame | Sequence[pl.DataFrame], entity: list[str]
) -> pl.DataFrame:
    """Merge partial frames (e.g. two batches) into one row per (entity, tile)."""
    frame = partials if isinstance(partials, pl.DataFrame) else pl.concat(list(partials))
    merged = _combine(frame, [*entity, TILE], value_names(frame))
    return merged.sort([*entity, TILE])


def _finish(aggs: Mapping[str, Sequence[Aggregation]]) -> list[pl.Expr]:
    """Expressions turning combined partials into window values (see module docstring)."""
    out: list[pl.Expr] = []
    for name, wanted in aggs.items():
        for agg in wanted:
            if agg not in AGGREGATIONS:
                raise ConfigError(f"unknown aggregation {agg!r}; use one of {AGGREGATIONS}")
        n = pl.col(partial_column(name, "count")).fill_null(0)
        s = pl.col(partial_column(name, "sum")).fill_null(0.0)
        q = pl.col(partial_column(name, "sumsq")).fill_null(0.0)
        nf = n.cast(pl.Float64)
        variance = pl.max_horizontal((q - s * s / nf) / (nf - 1.0), pl.lit(0.0))
        exprs: dict[Aggregation, pl.Expr] = {
            "count": n,
            "sum": s,
            "mean": pl.when(n > 0).then(s / nf),
            "min": pl.col(partial_column(name, "min")),
            "max": pl.col(partial_column(name, "max")),
            "std": pl.when(n >= 2).then(variance.sqrt()),
            "last": pl.col(partial_column(name, "last")),
        }
        out += [exprs[agg].alias(feature_column(name, agg)) for agg in wanted]
    return out


def _attach(
    rows: pl.DataFrame, combined: pl.DataFrame, aggs: Mapping[str, Sequence[Aggregation]]
) -> pl.DataFrame:
    """Rows (carrying ``_ROW``) with their window values; rows with no tiles are empty."""
    joined = rows.join(combined, on=_ROW, how="left", maintain_order="left")
    return joined.select(*[c for c in rows.columns if c != _ROW], *_finish(aggs))


def _rows_with_time(
    rows: pl.DataFrame | None, partials: pl.DataFrame, entity: list[str], at: str | int
) -> tuple[pl.DataFrame, pl.Expr]:
    if rows is None:
        rows = partials.select(entity).unique(maintain_order=True)
    if isinstance(at, int):
        return rows.with_row_index(_ROW), pl.lit(at, dtype=pl.Int64)
    return rows.with_row_index(_ROW), _epoch_ms(rows, at)


def window_values(
    partials: pl.DataFrame,
    entity: list[str],
    at: str | int,
    window: Window,
    aggs: Mapping[str, Sequence[Aggregation]],
    *,
    rows: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Window values at time ``at`` merged from tile partials of ``window.tile_ms``.

    ``at`` is one time for every row (online: the request time) or the name of a time
    column of ``rows``. ``rows`` holds the entity keys to read (default: every entity
    in ``partials``). Tiles must hold no event later than the row's time.
    """
    indexed, t = _rows_with_time(rows, partials, entity, at)
    spans = indexed.select(
        _ROW,
        *entity,
        window.first_tile_expr(t).alias("__lo"),
        window.tile_expr(t).alias("__hi"),
    )
    selected = (
        spans.join(partials, on=entity, how="inner")
        .filter(pl.col(TILE).is_between(pl.col("__lo"), pl.col("__hi")))
        .sort(_ROW, TILE)
    )
    combined = _combine(selected, [_ROW], list(aggs))
    return _attach(indexed, combined, aggs)


def as_of(
    events: pl.DataFrame,
    rows: pl.DataFrame,
    entity: list[str],
    time_col: str,
    window: Window,
    *,
    aggs: Mapping[str, Sequence[Aggregation]],
    at: str,
    value_cols: Mapping[str, str] | None = None,
    offset_col: str = "offset",
) -> pl.DataFrame:
    """Point-in-time window values for each row of ``rows`` at its own time column ``at``.

    Each row sees the events of its entity with time in ``[floor_g(t) - W + g, t]``;
    later events are ignored. ``value_cols`` maps value names to event columns
    (default: each name in ``aggs`` is its own column). Rows keep their order; the
    result is ``rows`` plus one column per `feature_column`.

    Cost: events are joined to rows by entity before the window filter, so memory is
    rows x events-per-entity; batch very long histories by time.
    """
    sources = dict(value_cols) if value_cols is not None else {name: name for name in aggs}
    indexed, t = _rows_with_time(rows, events, entity, at)
    spans = indexed.select(_ROW, *entity, window.start_expr(t).alias("__lo"), t.alias("__hi"))
    event_time = _epoch_ms(events, time_col)
    in_window = (
        spans.join(events.with_columns(event_time.alias("__et")), on=entity, how="inner")
        .filter(pl.col("__et").is_between(pl.col("__lo"), pl.col("__hi")))
        .drop("__lo", "__hi", "__et")
    )
    partials = tile_partials(
        in_window, [_ROW], time_col, sources, window.tile_ms, offset_col=offset_col
    )
    combined = _combine(partials, [_ROW], list(aggs))
    return _attach(indexed, combined, aggs)

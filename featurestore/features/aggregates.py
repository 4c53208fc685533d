"""Mergeable tile partials and window values: the Polars execution of the window engine.

This module owns how events become per-(entity, tile) partials and runs the merge and
finishing laws of `featurestore.features.spec` over Polars frames: point-in-time rows
(`as_of`), streaming/backfill updates (`tile_partials` then `merge_partials`) and
window values of many rows (`window_values`). Online lookups of a few entities run the
same laws without frames (`featurestore.features.small`); a differential property test
holds the two equal bit for bit.

Partial columns, per value name ``v`` (see `partial_column`; parts and their laws in
`featurestore.features.spec`)::

    v__count  Int64    non-null values in the tile
    v__sum    Float64  sum of values          (0.0 when count is 0; null if not numeric)
    v__sumsq  Float64  sum of squared values  (0.0 when count is 0; null if not numeric)
    v__min    Float64  minimum                (null when count is 0 or not numeric)
    v__max    Float64  maximum                (null when count is 0 or not numeric)
    v__last       Float64 or String  value of the latest event (null when count is 0)
    v__last_time  Int64    its event time
    v__last_offset Int64   its source offset
    v__sketch     List[UInt64]  distinct-count sketch (only for `Value.distinct`)

A value is numeric when its source column is; any other column (strings, enums,
booleans) supports count, last and distinct, and its ``last`` is its text form.

Invariants:
- a partial frame has one row per (entity..., ``tile``) and ``tile = floor(t / g)``;
- null values are ignored by every aggregate (they are absent, not zero);
- "latest" means the highest (event time, offset); offsets are compared alone, which
  is meaningful because an entity's events all live on one Kafka partition;
- merging follows `spec`: counts add, sums fold from the last row back (a window's
  rows in tile order: newest tile first), min/max combine, last picks the highest
  (time, offset), sketches keep the K smallest hashes of the union;
- the window at t is defined in `featurestore.features.windows`: event times in
  ``[floor_g(t) - W + g, t]``. `window_values` merges the window's tiles and assumes
  they hold no event later than t (online, such events have not arrived yet);
  `as_of` merges the window's whole tiles before t's tile with the partial of t's own
  tile over events up to t, so it is exact for any t;
- `as_of` computes via the same `tile_partials` and the same combining and finishing
  code as `window_values`, so both give the same numbers. Float caveat: sums within a
  tile are Polars' own and the online store adds a tile's batches in Lua, so a tile
  built from events may differ in its last bits from one built batch by batch;
  integer-valued floats below 2**53 are exact everywhere. Across tiles, the fold order
  is specified, so reading the same tiles gives the same bits on both executions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from featurestore.errors import ConfigError
from featurestore.features import spec
from featurestore.features.sketch import estimate, hash_column, merge_sketches, sketch_of
from featurestore.features.spec import AGGREGATIONS, NUMERIC_ONLY, Aggregation
from featurestore.features.windows import Window

__all__ = ["AGGREGATIONS", "NUMERIC_ONLY", "Aggregation"]

TILE = "tile"
ROW = "__row"  # a request row's position, while the engine works
PARTS = spec.PART_NAMES


@dataclass(frozen=True, slots=True)
class Value:
    """One aggregated value: its source column, and whether it keeps a distinct sketch."""

    column: str
    distinct: bool = False


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


def has_sketch(partials: pl.DataFrame, name: str) -> bool:
    return partial_column(name, "sketch") in partials.columns


def epoch_ms(schema: pl.Schema, column: str) -> pl.Expr:
    """An integer-milliseconds expression for a time column (Int or Datetime)."""
    dtype = schema[column]
    if isinstance(dtype, pl.Datetime):
        return pl.col(column).dt.epoch("ms")
    if dtype.is_integer():
        return pl.col(column).cast(pl.Int64)
    raise ConfigError(
        f"time column {column!r} has type {dtype}; use milliseconds since the epoch "
        "(an integer) or a Datetime"
    )


def as_values(value_cols: Mapping[str, str | Value]) -> dict[str, Value]:
    return {n: v if isinstance(v, Value) else Value(v) for n, v in value_cols.items()}


SPAN_LO, SPAN_HI = "__lo", "__hi"  # a tile partial's lowest and highest offset (`spans`)


def tile_partials(
    events: pl.DataFrame,
    entity: list[str],
    time_col: str,
    value_cols: Mapping[str, str | Value],
    tile_ms: int,
    *,
    offset_col: str = "offset",
    keys: Sequence[str] = (),
    spans: bool = False,
) -> pl.DataFrame:
    """One row of partials per entity x tile (x ``keys``), for each value name.

    ``value_cols`` maps value names to source columns (or `Value`). ``keys`` are extra
    grouping columns kept in the output (the online store groups by source partition).
    With ``spans``, each row also has the lowest and highest offset of its events
    (`SPAN_LO`, `SPAN_HI`: the online store's offset guard).
    """
    if tile_ms <= 0:
        raise ConfigError(f"tile {tile_ms} ms must be greater than 0; use e.g. '1m'")
    values = as_values(value_cols)
    selected: list[pl.Expr | pl.Series] = [
        *[pl.col(c) for c in (*entity, *keys)],
        epoch_ms(events.schema, time_col).alias("__t"),
        pl.col(offset_col).cast(pl.Int64).alias("__o"),
    ]
    for name, value in values.items():
        source = events.get_column(value.column)
        numeric = source.dtype.is_numeric()
        selected.append(source.cast(pl.Float64 if numeric else pl.String).alias(f"__v_{name}"))
        if value.distinct:
            selected.append(hash_column(source).alias(f"__h_{name}"))
    ordered = events.select(selected).sort("__t", "__o", maintain_order=True)
    aggs: list[pl.Expr] = []
    for name, value in values.items():
        v = pl.col(f"__v_{name}")
        present = v.is_not_null()
        numeric = ordered.schema[f"__v_{name}"] == pl.Float64
        aggs += [
            v.count().cast(pl.Int64).alias(partial_column(name, "count")),
            *[
                (expr if numeric else pl.lit(None, pl.Float64)).alias(partial_column(name, part))
                for part, expr in (
                    ("sum", v.sum()),
                    ("sumsq", (v * v).sum()),
                    ("min", v.min()),
                    ("max", v.max()),
                )
            ],
            v.drop_nulls().last().alias(partial_column(name, "last")),
            pl.col("__t").filter(present).last().alias(partial_column(name, "last_time")),
            pl.col("__o").filter(present).last().alias(partial_column(name, "last_offset")),
        ]
        if value.distinct:
            aggs.append(sketch_of(pl.col(f"__h_{name}")).alias(partial_column(name, "sketch")))
    if spans:
        aggs += [pl.col("__o").min().alias(SPAN_LO), pl.col("__o").max().alias(SPAN_HI)]
    return (
        ordered.with_columns(pl.col("__t").floordiv(tile_ms).alias(TILE))
        .group_by([*entity, *keys, TILE], maintain_order=True)
        .agg(aggs)
        .sort([*entity, *keys, TILE])
    )


def combine_exprs(
    names: Sequence[str],
    sketched: set[str],
    *,
    only: Mapping[str, Sequence[Aggregation]] | None = None,
    where: pl.Expr | None = None,
    prefix: str = "",
    in_time_order: bool = False,
) -> list[pl.Expr]:
    """Aggregations merging a group's partial rows (in frame order) into one, by the
    merge laws of `spec` (a window's rows in tile order: sums fold from the newest).

    ``only`` limits the parts to those these aggregations need; ``where`` merges only
    the rows it selects; outputs are named ``prefix + partial_column(...)``. With
    ``in_time_order`` the rows are distinct tiles of one entity in tile order (tiles
    never overlap in time), so the latest value is the last non-null one, no sort.
    """
    aggs: list[pl.Expr] = []
    for name in names:
        parts = [*spec.PARTS, *([spec.SKETCH] if name in sketched else [])]
        if only is not None:
            needed = {p for agg in only.get(name, ()) for p in spec.NEEDS[agg]}
            parts = [p for p in parts if p.name in needed]
        used = {p.name for p in parts} | {"last_time", "last_offset"}
        col = {part: pl.col(partial_column(name, part)) for part in used}
        if where is not None:
            col = {part: expr.filter(where) for part, expr in col.items()}
        for part in parts:
            merged = _merge_expr(part, col, in_time_order)
            aggs.append(merged.alias(prefix + partial_column(name, part.name)))
    return aggs


def _merge_expr(part: spec.Part, col: Mapping[str, pl.Expr], in_time_order: bool) -> pl.Expr:
    """One part's merge law (`spec`) as a group aggregation."""
    x = col[part.name]
    if part.merge == "add":
        if part.integer:
            return x.sum()
        # The specified fold: from the last row back, starting at 0.0.
        return x.drop_nulls().reverse().cum_sum().last() + 0.0
    if part.merge == "min":
        return x.min()
    if part.merge == "max":
        return x.max()
    if part.merge == "union":
        return merge_sketches(x)
    if in_time_order:
        return x.drop_nulls().last()
    return x.sort_by([col["last_time"], col["last_offset"]], nulls_last=False).last()


def _combine(
    frame: pl.DataFrame,
    keys: list[str],
    names: Sequence[str],
    only: Mapping[str, Sequence[Aggregation]] | None = None,
) -> pl.DataFrame:
    sketched = {n for n in names if has_sketch(frame, n)}
    exprs = combine_exprs(names, sketched, only=only)
    return frame.group_by(keys, maintain_order=True).agg(exprs)


def merge_partials(
    partials: pl.DataFrame | Sequence[pl.DataFrame], entity: list[str]
) -> pl.DataFrame:
    """Merge partial frames (e.g. two batches) into one row per (entity, tile)."""
    frame = partials if isinstance(partials, pl.DataFrame) else pl.concat(list(partials))
    merged = _combine(frame, [*entity, TILE], value_names(frame))
    return merged.sort([*entity, TILE])


class _PolarsOps:
    """`spec.Ops` over Polars expressions."""

    def count(self, n: pl.Expr) -> pl.Expr:
        return n.fill_null(0)

    def zero_if_null(self, x: pl.Expr) -> pl.Expr:
        return x.fill_null(0.0)

    def where(self, condition: pl.Expr, x: pl.Expr) -> pl.Expr:
        return pl.when(condition).then(x)

    def at_least_zero(self, x: pl.Expr) -> pl.Expr:
        return pl.max_horizontal(x, pl.lit(0.0))

    def sqrt(self, x: pl.Expr) -> pl.Expr:
        return x.sqrt()

    def as_float(self, x: pl.Expr) -> pl.Expr:
        return x.cast(pl.Float64)

    def estimate(self, sketch: pl.Expr) -> pl.Expr:
        return estimate(sketch)


_POLARS = _PolarsOps()


def finish_exprs(aggs: Mapping[str, Sequence[Aggregation]], *, prefix: str = "") -> list[pl.Expr]:
    """Expressions turning combined partials (named ``prefix + partial_column``) into
    window values named ``prefix + feature_column`` (`spec.finish`)."""
    out: list[pl.Expr] = []
    for name, wanted in aggs.items():
        for agg in wanted:
            if agg not in AGGREGATIONS:
                raise ConfigError(f"unknown aggregation {agg!r}; use one of {AGGREGATIONS}")

        def part(p: str, name: str = name) -> pl.Expr:
            return pl.col(prefix + partial_column(name, p))

        out += [spec.finish(agg, part, _POLARS).alias(prefix + feature_column(name, agg))
                for agg in wanted]  # fmt: skip
    return out


def attach(
    rows: pl.DataFrame, combined: pl.DataFrame, aggs: Mapping[str, Sequence[Aggregation]]
) -> pl.DataFrame:
    """Rows (carrying ``ROW``) with their window values; rows with no tiles are empty."""
    joined = rows.join(combined, on=ROW, how="left", maintain_order="left")
    return joined.select(*[c for c in rows.columns if c != ROW], *finish_exprs(aggs))


def rows_with_time(
    rows: pl.DataFrame | None, partials: pl.DataFrame, entity: list[str], at: str | int
) -> tuple[pl.DataFrame, pl.Expr]:
    if rows is None:
        rows = partials.select(entity).unique(maintain_order=True)
    if isinstance(at, int):
        return rows.with_row_index(ROW), pl.lit(at, dtype=pl.Int64)
    return rows.with_row_index(ROW), epoch_ms(rows.schema, at)


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
    indexed, t = rows_with_time(rows, partials, entity, at)
    spans = indexed.select(
        ROW,
        *entity,
        window.first_tile_expr(t).alias("__lo"),
        window.tile_expr(t).alias("__hi"),
    )
    selected = (
        spans.join(partials, on=entity, how="inner")
        .filter(pl.col(TILE).is_between(pl.col("__lo"), pl.col("__hi")))
        .sort(ROW, TILE)
    )
    combined = _combine(selected, [ROW], list(aggs))
    return attach(indexed, combined, aggs)

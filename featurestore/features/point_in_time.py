"""Point-in-time window values: each request row sees exactly the events of its entity
with time in ``[floor_g(t) - W + g, t]`` at its own t (the offline side of parity).

Invariants: rows keep their order (duplicates too); nothing after t is seen; the
values come from the engine's `tile_partials`, `combine_exprs` and `finish_exprs`, the
same code the online store's tiles go through.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from featurestore.errors import ConfigError
from featurestore.features.aggregates import (
    ROW,
    TILE,
    Aggregation,
    Value,
    as_values,
    attach,
    combine_exprs,
    epoch_ms,
    has_sketch,
    rows_with_time,
    tile_partials,
)
from featurestore.features.windows import Window


def as_of(
    events: pl.DataFrame,
    rows: pl.DataFrame,
    entity: list[str],
    time_col: str,
    window: Window,
    *,
    aggs: Mapping[str, Sequence[Aggregation]],
    at: str,
    value_cols: Mapping[str, str | Value] | None = None,
    offset_col: str = "offset",
    tiles: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Point-in-time window values for each row of ``rows`` at its own time column ``at``.

    Each row sees the events of its entity with time in ``[floor_g(t) - W + g, t]``;
    later events are ignored. ``value_cols`` maps value names to event columns
    (default: each name in ``aggs`` is its own column; `Value` to keep a sketch). Rows
    keep their order; the result is ``rows`` plus one column per `feature_column`.

    How: the whole tiles before t's tile come from the events' tile partials (pass
    ``tiles`` when they are already computed: `tile_partials` output, sorted by entity
    and tile), found by binary search and gathered by position, and t's own tile from
    its events up to t. Memory is the rows' window tiles, not rows x all tiles.
    """
    sources = (
        as_values(value_cols)
        if value_cols is not None
        else {n: Value(n, distinct="distinct" in wanted) for n, wanted in aggs.items()}
    )
    if tiles is None:
        tiles = tile_partials(events, entity, time_col, sources, window.tile_ms,
                              offset_col=offset_col)  # fmt: skip
    indexed, t = rows_with_time(rows, events, entity, at)
    spans = indexed.select(
        ROW, *entity, window.first_tile_expr(t).alias("__lo"), window.tile_expr(t).alias("__hi"),
        t.alias("__t"),
    )  # fmt: skip
    first, last = _tile_positions(tiles, spans, entity)
    keyed = events.with_columns(
        epoch_ms(events.schema, time_col).floordiv(window.tile_ms).alias("__hi")
    )
    current_events = (
        spans.join(keyed, on=[*entity, "__hi"], how="inner")
        .filter(epoch_ms(events.schema, time_col) <= pl.col("__t"))
        .drop(*entity)
    )
    current = tile_partials(current_events, [ROW], time_col, sources, window.tile_ms,
                            offset_col=offset_col)  # fmt: skip
    # Each row's partials, gathered by position in tile order: its whole tiles
    # [first, last) in `tiles`, then its current tile (after the tiles in `source`).
    at_current = indexed.select(ROW).join(
        current.select(ROW).with_row_index("__c"), on=ROW, how="left", maintain_order="left"
    )
    plan = pl.DataFrame(
        {ROW: indexed[ROW], "__a": first, "__b": last,
         "__c": at_current["__c"].cast(pl.Int64) + tiles.height}
    )  # fmt: skip
    positions = (
        plan.select(
            ROW, pl.concat_list(pl.int_ranges("__a", "__b"), "__c").list.drop_nulls().alias("__p")
        )
        .explode("__p")
        .drop_nulls("__p")
    )
    parts = [c for c in tiles.columns if c not in (*entity, TILE)]
    source = pl.concat([tiles.select(parts), current.select(parts)])
    merged = source[positions["__p"]].with_columns(positions[ROW].set_sorted())
    sketched = {n for n in aggs if has_sketch(merged, n)}
    exprs = combine_exprs(list(aggs), sketched, only=aggs, in_time_order=True)
    combined = merged.group_by(ROW, maintain_order=True).agg(exprs)
    return attach(indexed, combined, aggs)


def _tile_positions(
    tiles: pl.DataFrame, spans: pl.DataFrame, entity: list[str]
) -> tuple[pl.Series, pl.Series]:
    """Per span row, positions [first, last) in ``tiles`` (sorted by entity, tile) of its
    entity's tiles with index in [__lo, __hi): one sortable Int64 key per tile (entity
    number, tile) and two binary searches."""
    ids = tiles.select(entity).unique(maintain_order=True).with_row_index("__eid")
    low = int(tiles[TILE].min() or 0)  # type: ignore[arg-type]
    shift = max(1, (int(tiles[TILE].max() or 0) - low + 2).bit_length())  # type: ignore[arg-type]
    if ids.height >= 1 << (62 - shift):
        raise ConfigError("too many entities x tiles for one request; pass fewer rows at once")
    eid = pl.col("__eid").cast(pl.Int64)
    keys = (
        tiles.join(ids, on=entity, how="left", maintain_order="left")
        .select(eid * (1 << shift) + (pl.col(TILE) - low))
        .to_series()
    )
    top = (1 << shift) - 1
    bounds = spans.join(ids, on=entity, how="left", maintain_order="left").select(
        *[(eid.fill_null(-1) * (1 << shift) + (pl.col(c) - low).clip(0, top)).alias(c)
          for c in ("__lo", "__hi")]
    )  # fmt: skip
    first = keys.search_sorted(bounds["__lo"], side="left").cast(pl.Int64)
    return first, keys.search_sorted(bounds["__hi"], side="left").cast(pl.Int64)

"""Reading several windows at ONE time in one pass: the online store's read.

At a single request time each window's tiles are a constant range, so every window of a
view is one filtered aggregation of the same group-by over the stored tiles, built
once per (windows, aggregations) as a `WindowRead` and reused for every request. The
merging and finishing expressions are the engine's own (`combine_exprs`,
`finish_exprs` in `featurestore.features.aggregates`); a property test checks this
equals `window_values` one window at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import polars as pl

from featurestore.features.aggregates import (
    TILE,
    Aggregation,
    combine_exprs,
    feature_column,
    finish_exprs,
)
from featurestore.features.windows import Window

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)


@dataclass(frozen=True)
class WindowRead:
    """A compiled read of several windows at one time (see `windows_at`); built once per
    set of (window, aggregations) and reused for every request time."""

    windows: tuple[tuple[Window, Mapping[str, Sequence[Aggregation]]], ...]
    combine: tuple[pl.Expr, ...]
    finish: tuple[pl.Expr, ...]
    sources: tuple[int, ...]  # the source (view) each window reads, see `windows_at`

    @classmethod
    def of(
        cls,
        windows: Sequence[tuple[Window, Mapping[str, Sequence[Aggregation]]]],
        sketched: set[str],
        sources: Sequence[int] | None = None,
    ) -> WindowRead:
        combine: list[pl.Expr] = []
        finish: list[pl.Expr] = []
        for i, (_, aggs) in enumerate(windows):
            mine = pl.col(f"__in{i}")
            combine += combine_exprs(list(aggs), sketched & set(aggs), only=aggs, where=mine,
                                     prefix=f"w{i}|")  # fmt: skip
            finish += finish_exprs(aggs, prefix=f"w{i}|")
        chosen = tuple(sources) if sources is not None else (0,) * len(windows)
        if len(chosen) != len(windows):
            raise ValueError(f"{len(windows)} windows but {len(chosen)} sources")
        return cls(tuple(windows), tuple(combine), tuple(finish), chosen)

    def column(self, index: int, name: str, agg: Aggregation) -> str:
        """The output column of one window's feature."""
        return f"w{index}|{feature_column(name, agg)}"


def windows_at(
    partials: Frame, key: str, rows: Frame, at: int, read: WindowRead,
    *, tile_ms_col: str, source_col: str | None = None, carry: Sequence[pl.Expr] = (),
) -> Frame:  # fmt: skip
    """Window values of several windows at ONE time ``at``, in one pass.

    ``partials`` hold tiles of several granularities (``tile_ms_col``) per ``key``. At a
    single time each window's tiles are a constant range, so every window is one
    filtered aggregation of the same group-by; rows of ``rows`` (one per ``key``) with
    no tiles get empty-window values. Tiles must hold no event later than ``at``.
    With ``source_col``, tiles of several views share the frame: window ``i`` reads the
    tiles whose source is ``read.sources[i]`` (their values are named apart).
    ``carry`` are further aggregations of a key's tiles, kept as they are.
    Columns: ``rows``' own, then `WindowRead.column` per window and feature, then
    ``carry``'s. Eager frames in, eager out: for a small online read, running the steps
    eagerly costs less than planning them as one lazy query (measured: ~3 ms against
    ~4.5 ms for 50 features of 5 views on one entity).
    """
    masks = []
    for (w, _), source in zip(read.windows, read.sources, strict=True):
        mask = (pl.col(tile_ms_col) == w.tile_ms) & pl.col(TILE).is_between(
            w.first_tile(at), w.tile_of(at)
        )
        masks.append(mask if source_col is None else mask & (pl.col(source_col) == source))
    merged = (
        partials.sort(key, TILE)
        .with_columns(*[m.alias(f"__in{i}") for i, m in enumerate(masks)])
        .group_by(key)
        .agg(*read.combine, *carry)
    )
    joined = rows.join(merged, on=key, how="left", maintain_order="left")
    carried = [expr.meta.output_name() for expr in carry]
    return joined.select(*rows.collect_schema().names(), *read.finish, *carried)

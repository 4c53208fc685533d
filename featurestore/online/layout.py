"""The online store's layout in Redis, and records to and from engine partials (pure).

One hash per (view, version, entity)::

    key     <prefix>:<view>:v<version>:<entity key>      entity key = join-key values
                                                          joined by U+001F
    field   "<tile ms>,<tile index>"  -> one tile's record (see below)
    field   "o:<topic>:<partition>"   -> highest source offset applied to this hash

and one hash per (view, version) at ``<prefix>:<view>:v<version>`` (no entity key can
be that key) with fields ``values`` (the record layout) and ``text`` (text values).

A record is one tile's partials for every value of the view, in `FeatureView.values`
order, as comma-separated tokens per value::

    count,sum,sumsq,min,max,last,last_time,last_offset[,sketch]

Numbers are written in shortest round-trip form (Polars) or ``%.17g`` (Lua), so every
double survives exactly; an empty token is null; a text ``last`` is hex-encoded so it
can hold any character; a sketch is its hashes in ascending order, zero-padded to 16
digits (string order is numeric order, so Lua merges them as strings) and
space-separated, present only for values with a distinct count (layout char ``s``,
otherwise ``p``).

Invariants: records are only ever merged by ``apply.lua`` with the engine's merge laws
(`featurestore.features.aggregates`); a record decoded here is an engine partial row.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from featurestore.features.aggregates import PARTS, TILE, partial_column
from featurestore.features.definitions import FeatureView

ENTITY_SEPARATOR = "\x1f"
ROW = "__entity"
TILE_MS = "__tile_ms"
SOURCE = "__source"
_NUMERIC_PARTS: dict[str, type[pl.DataType]] = {
    "count": pl.Int64, "sum": pl.Float64, "sumsq": pl.Float64, "min": pl.Float64,
    "max": pl.Float64, "last_time": pl.Int64, "last_offset": pl.Int64,
}  # fmt: skip


def view_prefix(prefix: str, view: FeatureView, version: int | None = None) -> str:
    return f"{prefix}:{view.name}:v{view.version if version is None else version}:"


def meta_key(prefix: str, view: str, version: int) -> str:
    """The hash of one view version's layout, text values and lifecycle marks (without
    the trailing ':' of entity keys, so no entity key can be this key)."""
    return f"{prefix}:{view}:v{version}"


def entity_keys(frame: pl.DataFrame, join_keys: list[str]) -> pl.Expr:
    """The entity part of each row's key."""
    parts = [pl.col(k).cast(pl.String) for k in join_keys]
    return parts[0] if len(parts) == 1 else pl.concat_str(parts, separator=ENTITY_SEPARATOR)


def layout(view: FeatureView) -> str:
    return "".join("s" if v.distinct else "p" for v in view.values.values())


def offset_field(topic: str, partition: int) -> str:
    return f"o:{topic}:{partition}"


def record_tokens(view: FeatureView, text_values: set[str]) -> list[pl.Expr]:
    """Token expressions of a record from a partial frame (``text_values``: text last)."""
    tokens: list[pl.Expr] = []
    for name, value in view.values.items():
        for part in PARTS:
            col = pl.col(partial_column(name, part))
            if part == "last" and name in text_values:
                col = col.str.encode("hex")
            tokens.append(col.cast(pl.String).fill_null(""))
        if value.distinct:
            sketch = pl.col(partial_column(name, "sketch"))
            padded = sketch.cast(pl.List(pl.String)).list.eval(pl.element().str.zfill(16))
            tokens.append(padded.list.join(" ").fill_null(""))
    return tokens


def record_expr(view: FeatureView, text_values: set[str]) -> pl.Expr:
    return pl.concat_str(record_tokens(view, text_values), separator=",")


def decode_records(payload: bytes, view: FeatureView, text_values: set[str]) -> pl.DataFrame:
    """CSV lines ``<row>,<tile ms>,<tile index>,<record>`` (``read.lua`` with no source or
    padding) as an engine partial frame with ``__entity``, ``__tile_ms`` and ``tile``."""
    return decode_sources(payload, [Source(view, text_values, "")], source_col=False)


@dataclass(frozen=True)
class Source:
    """One view read into a shared frame: its record's values are named ``prefix + name``."""

    view: FeatureView
    text_values: set[str]
    prefix: str


def record_width(view: FeatureView) -> int:
    """Tokens in one record of ``view``."""
    return len(_column_order(view, "")) - 3


def decode_sources(
    payload: bytes, sources: Sequence[Source], *, source_col: bool = True
) -> pl.DataFrame:
    """Lines of several views in ONE frame: ``<row>,<source>,<tile ms>,<tile index>``,
    then every source's record slot in order, empty but for the line's own source (the
    padding ``read.lua`` adds). One CSV parse and one query serve a whole request, which
    is what an online read costs: the fixed cost per Polars call, not the data.
    Numbers are typed by the CSV reader; only text ``last`` values (hex) and sketches
    need a second step."""
    schema: dict[str, pl.DataType] = {ROW: pl.Int64()}
    if source_col:
        schema[SOURCE] = pl.Int64()
    schema |= {TILE_MS: pl.Int64(), TILE: pl.Int64()}
    after: list[pl.Expr] = []
    for source in sources:
        for name, value in source.view.values.items():
            named, text = source.prefix + name, name in source.text_values
            for part, dtype in _NUMERIC_PARTS.items():
                schema[partial_column(named, part)] = dtype()
            last = partial_column(named, "last")
            schema[last] = pl.String() if text else pl.Float64()
            if text:
                after.append(pl.col(last).str.decode("hex").cast(pl.String))
            if value.distinct:
                sketch = partial_column(named, "sketch")
                schema[sketch] = pl.String()
                hashes = pl.col(sketch).str.split(" ").cast(pl.List(pl.UInt64))
                after.append(hashes.fill_null(pl.lit([], pl.List(pl.UInt64))))
    order = list(schema)[: 4 if source_col else 3]
    for source in sources:
        order += _column_order(source.view, source.prefix)[3:]
    ordered = {c: schema[c] for c in order}
    if not payload:
        raw = pl.DataFrame(schema=ordered)
    else:
        raw = pl.read_csv(io.BytesIO(payload), has_header=False, schema=ordered,
                          quote_char=None)  # fmt: skip
    return raw.with_columns(after) if after else raw


def _column_order(view: FeatureView, prefix: str) -> list[str]:
    columns = [ROW, TILE_MS, TILE]
    for name, value in view.values.items():
        columns += [partial_column(prefix + name, part) for part in PARTS]
        if value.distinct:
            columns.append(partial_column(prefix + name, "sketch"))
    return columns

"""The online store's layout in Redis, and tile records to and from engine partials.

One hash per (view, version, entity)::

    key     <prefix>:<view>:v<version>:<entity key>      entity key = join-key values
                                                          joined by U+001F
    field   "<tile ms>,<tile index>"  -> one tile's record (see below)
    field   "o:<topic>:<partition>"   -> highest source offset applied to this hash

and one hash per (view, version) at ``<prefix>:<view>:v<version>`` (no entity key can
be that key) with fields ``values`` (each value's kind and kept parts: `layout`),
``text`` (text values) and ``format`` (the record format, `FORMAT`).

A record (format 3) is one tile's partials of the view's values, binary, every number
a little-endian double (NaN is null; counts, times, offsets and sketch hashes are
integers below 2**53, exact as doubles)::

    fixed   tile ms, tile index, the tile's newest event time (of any value), then per
            value (`FeatureView.values` order) the parts its features read
            (`spec.kept`: the count, then what each aggregation `NEEDS`, in
            `spec.PARTS` order), then for a value with a distinct count its sketch's
            size
    sketch  per value with a distinct count: its hashes, ascending (size doubles)
    text    per text value keeping ``last`` (a string): the UTF-8 bytes of ``last``;
            the ``last`` slot of the fixed part holds their length

So a record holds nothing a lookup of its view cannot read (format 2 kept all eight
parts of every value), the fixed part of every record of a view has one width
(`Record.width`), and a batch of records decodes into one numpy matrix with a single
``frombuffer``. A record is at least 32 bytes (the header and a count) and an offset
mark at most 20 (decimal digits), which is how a reader of ``HVALS`` tells them apart
without the field names. Which parts a value keeps follows from the view's features,
so the meta hash's ``values`` names them: a version's features cannot change under
stored records (`RedisOnlineStore.register`).

Invariants: records are only ever merged by `featurestore.online.merge`, with the
merge laws of `featurestore.features.spec`; a record decoded here is an engine partial row (the
parts it does not keep are null).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import compress

import numpy as np
import polars as pl

from featurestore.errors import ConfigError
from featurestore.features.aggregates import TILE, partial_column
from featurestore.features.definitions import FeatureView
from featurestore.features.spec import PARTS, Part, kept

FORMAT = 3
ENTITY_SEPARATOR = "\x1f"
ROW = "__entity"
TILE_MS = "__tile_ms"
HEADER = 3  # tile ms, tile index, newest event time
NEWEST = 2  # the header's newest event time (merged by max)
WRITE_TOKEN = "w"  # the field of a hash's write token (`write.lua`'s compare-and-set)
MIN_RECORD_BYTES = 8 * (HEADER + 1)  # the header and one value's count
_NAN = float("nan")


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


# Entity rows of a lookup: a frame of the join keys, or (what a client builds when every
# key is text or an integer, cheaper than any frame for a few rows) lists of them by key.
Rows = pl.DataFrame | Mapping[str, Sequence[str | int | None]]


def row_count(entities: Rows) -> int:
    if isinstance(entities, pl.DataFrame):
        return entities.height
    return len(next(iter(entities.values()), ()))


def entity_parts(entities: Rows, join_keys: list[str]) -> list[str]:
    """Each row's entity key (`entity_keys`), ``"\x00"`` for a row with a null key (a
    key that cannot exist). Text and integer keys are joined in Python, which for the few
    rows of a lookup costs less than a Polars query; other types take `entity_keys`."""
    if not isinstance(entities, pl.DataFrame):  # text or integers (`Rows`)
        values = [[v if v is None or type(v) is str else str(v) for v in entities[k]]
                  for k in join_keys]  # fmt: skip
        if len(values) == 1:
            return ["\x00" if v is None else v for v in values[0]]
        return ["\x00" if None in row else ENTITY_SEPARATOR.join(row)
                for row in zip(*values, strict=True)]  # fmt: skip
    columns = [entities.get_column(k) for k in join_keys]
    if all(c.dtype == pl.String or c.dtype.is_integer() for c in columns):
        values = [c.to_list() if c.dtype == pl.String
                  else [None if v is None else str(v) for v in c.to_list()]
                  for c in columns]  # fmt: skip
        if len(values) == 1:
            return ["\x00" if v is None else v for v in values[0]]
        return ["\x00" if None in row else ENTITY_SEPARATOR.join(row)
                for row in zip(*values, strict=True)]  # fmt: skip
    keys = entities.select(entity_keys(entities, join_keys).fill_null("\x00"))
    parts: list[str] = keys.to_series().to_list()
    return parts


def kept_parts(view: FeatureView) -> dict[str, tuple[Part, ...]]:
    """Per value of ``view``, the parts its records keep (`spec.kept`)."""
    return {name: kept(f.function for f in view.features if f.column == name)
            for name in view.values}  # fmt: skip


def layout(view: FeatureView) -> str:
    """The record layout, for the meta hash: per value its name, ``s`` with a distinct
    sketch or ``p`` without, and the parts it keeps."""
    kinds = {n: "s" if v.distinct else "p" for n, v in view.values.items()}
    return ",".join(f"{n}:{kinds[n]}:{'+'.join(p.name for p in parts)}"
                    for n, parts in kept_parts(view).items())  # fmt: skip


def tile_records(values: Sequence[bytes]) -> list[bytes]:
    """The tile records among one hash's ``HVALS``: offset marks are told apart by their
    length (`MIN_RECORD_BYTES`)."""
    return list(compress(values, map(MIN_RECORD_BYTES.__le__, map(len, values))))  # in C


def offset_field(topic: str, partition: int) -> str:
    return f"o:{topic}:{partition}"


def check_format(stored: bytes | str | None, view: FeatureView, where: str) -> None:
    """A ConfigError naming the fix when a view version's data is in another format."""
    found = int(stored) if stored is not None else 1
    if found != FORMAT:
        raise ConfigError(
            f"{where}: view {view.name!r} version {view.version} holds online records of "
            f"format {found}, and this featurestore reads and writes format {FORMAT}; give "
            f"the view a new version (bump `version`), then `featurestore backfill "
            f"{view.name} --version <new>` and `featurestore views promote`, or delete "
            f"the old keys ({view.name}:v{view.version}:*) and backfill the same version"
        )


@dataclass(frozen=True)
class Record:
    """The record layout of one view (with its text values): slot positions in the
    fixed part, and how to encode a partial frame and decode records."""

    view: FeatureView
    text_values: frozenset[str]

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(self.view.values)

    @cached_property
    def sketched(self) -> tuple[str, ...]:
        return tuple(n for n, v in self.view.values.items() if v.distinct)

    @cached_property
    def parts(self) -> dict[str, tuple[Part, ...]]:
        """Per value, the parts its records keep (`kept_parts`)."""
        return kept_parts(self.view)

    @cached_property
    def texts(self) -> tuple[str, ...]:
        """The text values whose ``last`` (a string) is kept."""
        return tuple(n for n in self.names if n in self.text_values
                     and any(p.name == "last" for p in self.parts[n]))  # fmt: skip

    @cached_property
    def slots(self) -> dict[tuple[str, str], int]:
        """(value, part) -> its index in the fixed part; part ``size`` is a sketch's."""
        out: dict[tuple[str, str], int] = {}
        end = HEADER
        for name in self.names:
            for part in self.parts[name]:
                out[(name, part.name)] = end
                end += 1
        for i, name in enumerate(self.sketched):
            out[(name, "size")] = end + i
        return out

    @cached_property
    def width(self) -> int:
        """Doubles in the fixed part."""
        return HEADER + sum(len(p) for p in self.parts.values()) + len(self.sketched)

    @cached_property
    def kept_columns(self) -> list[str]:
        """The engine partial columns a record stores (the others decode as nulls)."""
        return [TILE, *(partial_column(n, p.name) for n in self.names for p in self.parts[n]),
                *(partial_column(n, "sketch") for n in self.sketched)]  # fmt: skip

    @property
    def newest_slot(self) -> int:
        """The slot of the tile's newest event time (of any value): in the header."""
        return NEWEST

    @property
    def fixed_only(self) -> bool:
        return not self.sketched and not self.texts

    # --- encode -------------------------------------------------------------------------

    def encode(self, partials: pl.DataFrame, tile_ms: int) -> list[bytes]:
        """One record per row of an engine partial frame of granularity ``tile_ms``."""
        times = [pl.col(partial_column(n, "last_time")) for n in self.names]
        columns: list[pl.Expr] = [
            pl.lit(float(tile_ms)),
            pl.col(TILE).cast(pl.Float64),
            pl.max_horizontal(times).cast(pl.Float64).fill_null(_NAN).alias("__newest"),
        ]
        for name in self.names:
            for part in self.parts[name]:
                col = pl.col(partial_column(name, part.name))
                if part.name == "last" and name in self.texts:
                    col = col.str.len_bytes()
                columns.append(col.cast(pl.Float64).fill_null(_NAN))
        columns += [pl.col(partial_column(n, "sketch")).list.len().cast(pl.Float64)
                    .fill_null(0.0) for n in self.sketched]  # fmt: skip
        matrix = np.ascontiguousarray(partials.select(columns).to_numpy(), dtype="<f8")
        rows = matrix.view(np.dtype((np.void, 8 * self.width))).ravel()
        fixed: list[bytes] = [row.tobytes() for row in rows]
        if self.fixed_only:
            return fixed
        pieces: list[list[bytes]] = [fixed]
        for name in self.sketched:
            sketches = partials.get_column(partial_column(name, "sketch"))
            pieces.append(_split(sketches))
        for name in self.texts:
            texts = partials.get_column(partial_column(name, "last")).to_list()
            pieces.append([b"" if t is None else t.encode() for t in texts])
        return [b"".join(parts) for parts in zip(*pieces, strict=True)]

    # --- decode -------------------------------------------------------------------------

    def matrix(self, records: Sequence[bytes]) -> np.ndarray:
        """The fixed parts of ``records`` as one (records x width) matrix."""
        size = 8 * self.width
        joined = b"".join(records) if self.fixed_only else b"".join(r[:size] for r in records)
        if len(joined) != size * len(records):
            raise self.size_error()
        return np.frombuffer(joined, dtype="<f8").reshape(len(records), self.width)

    def size_error(self) -> ConfigError:
        """What a record of another size than this layout's means, and its fix."""
        return ConfigError(
            f"view {self.view.name!r} version {self.view.version}: an online record is not "
            f"{8 * self.width} bytes of fixed part; its values changed without a new "
            "version? bump `version` and backfill"
        )

    def sketch_sizes(self, matrix: np.ndarray) -> np.ndarray:
        """Per record, per sketched value: the sketch's size (records x sketched)."""
        columns = [self.slots[(n, "size")] for n in self.sketched]
        return matrix[:, columns].astype(np.int64)

    def hashes(self, records: Sequence[bytes], sizes: np.ndarray) -> np.ndarray:
        """Every sketch hash of ``records``, record after record, value after value."""
        start, totals = 8 * self.width, (8 * sizes.sum(axis=1)).tolist()
        joined = b"".join(r[start : start + t] for r, t in zip(records, totals, strict=True))
        return np.frombuffer(joined, dtype="<f8").astype(np.uint64)

    def text_spans(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per record (row of ``matrix``) and text value: where its ``last`` starts in
        the record, and its length in bytes (NaN when null)."""
        lengths = matrix[:, [self.slots[(n, "last")] for n in self.texts]]
        known = np.where(np.isnan(lengths), 0.0, lengths)
        sizes = matrix[:, [self.slots[(n, "size")] for n in self.sketched]].sum(axis=1)
        base = 8 * (self.width + sizes)
        starts = base[:, None] + np.cumsum(known, axis=1) - known
        return starts, lengths

    @staticmethod
    def text(record: bytes, start: float, length: float) -> str | None:
        """The text ``last`` at a span of `text_spans` (None when null)."""
        if length != length:  # noqa: PLR0124 - NaN: null
            return None
        begin = int(start)
        return record[begin : begin + int(length)].decode()

    def frame(self, records: Sequence[bytes], rows: Sequence[int]) -> pl.DataFrame:
        """Records as an engine partial frame with ``__entity`` (``rows``), ``__tile_ms``
        and ``tile``: for the Polars engine and tools, not the lookup path."""
        matrix = self.matrix(records) if records else np.zeros((0, self.width))
        columns: dict[str, pl.Series] = {
            ROW: pl.Series(ROW, list(rows), dtype=pl.Int64),
            TILE_MS: pl.Series(TILE_MS, matrix[:, 0]).cast(pl.Int64),
            TILE: pl.Series(TILE, matrix[:, 1]).cast(pl.Int64),
        }
        for name in self.names:
            for part in PARTS:
                column = partial_column(name, part.name)
                slot = self.slots.get((name, part.name))
                if slot is None:  # not kept: null, typed as the engine's column
                    text = part.name == "last" and name in self.text_values
                    dtype = pl.String if text else pl.Int64 if part.integer else pl.Float64
                    columns[column] = pl.Series(column, [None] * len(records), dtype=dtype)
                    continue
                values = pl.Series(column, matrix[:, slot]).fill_nan(None)
                if part.name == "last" and name in self.texts:
                    starts, lengths = self.text_spans(matrix)
                    k = self.texts.index(name)
                    spans = zip(records, starts[:, k].tolist(), lengths[:, k].tolist(),
                                strict=True)  # fmt: skip
                    texts = [self.text(r, a, n) for r, a, n in spans]
                    values = pl.Series(column, texts, dtype=pl.String)
                elif part.integer:
                    values = values.cast(pl.Int64)
                columns[column] = values
        if self.sketched:
            sizes = self.sketch_sizes(matrix)
            hashes = self.hashes(records, sizes).tolist()
            flat = iter(hashes)
            per_value = {n: [] for n in self.sketched}  # type: dict[str, list[list[int]]]
            for record_sizes in sizes.tolist():
                for name, size in zip(self.sketched, record_sizes, strict=True):
                    per_value[name].append([next(flat) for _ in range(size)])
            for name, lists in per_value.items():
                column = partial_column(name, "sketch")
                columns[column] = pl.Series(column, lists, dtype=pl.List(pl.UInt64))
        return pl.DataFrame(columns)


def _split(sketches: pl.Series) -> list[bytes]:
    """Each row's sketch as packed little-endian doubles (empty for none)."""
    sizes = sketches.list.len().fill_null(0).to_numpy()
    flat = sketches.explode().drop_nulls().cast(pl.Float64).to_numpy().astype("<f8")
    buffer = flat.tobytes()
    ends = (8 * np.cumsum(sizes)).tolist()
    starts = [0, *ends[:-1]][: len(ends)]
    return [buffer[a:b] for a, b in zip(starts, ends, strict=True)]

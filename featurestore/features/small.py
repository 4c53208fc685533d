"""The small-read execution of the window engine: online lookups without Polars frames.

A lookup reads a few entities' tile records (`featurestore.online.layout.Record`) of a
few views and needs their window values at ONE request time. Polars' fixed cost per
call (0.3-1.5 ms a step) would dominate it, so this module runs the merge and finishing
laws of `featurestore.features.spec` on numpy arrays instead. A `LookupPlan` is compiled
once per request shape (views, features, text values); each lookup then costs a fixed
number of array operations, whatever the number of features, views or entity rows:

- the fixed parts of every view's records are stacked in ONE matrix (padded to the
  widest record), and one table per (view, granularity) (`_Stacked`) says where each
  record's parts go, so each step below is one operation for all views;
- every part a feature reads, of every view and granularity, is a column of ONE dense
  array laid out by (column, entity row, age), where age = ``floor(at / g) - tile``
  (0 for the request time's own tile). A window of T tiles is the first T ages, so ONE
  accumulation along the age axis answers every window: a cumulative sum from age 0 is
  the specified fold of ``add`` (newest tile first, starting at 0.0; an absent tile
  adds 0.0, which changes no sum), running min/max are ``min``/``max``, and the newest
  age holding a value (a positive count) gives ``latest``;
- `spec.finish` runs once per aggregation over a (features x entity rows) array: the
  formula the Polars engine evaluates, so both agree bit for bit
  (tests/unit/features/test_small_read.py);
- sketches (``union``): each (sketch, row, hash) is kept once, at the newest age it was
  seen; counts per age, accumulated, give every window's distinct count at once;
- a text ``last`` is sliced from the record holding it, every one of them at once.

Tiles later than the request time's tile are ignored (they cannot exist online: their
events have not arrived yet); tiles older than a window are outside it, as in
`featurestore.features.windows`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from operator import getitem, itemgetter
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from featurestore.features import spec
from featurestore.features.definitions import Feature, FeatureView
from featurestore.features.sketch import HASH_BITS, SCALE, K

if TYPE_CHECKING:  # the online store's record format, which passes its Record in
    from featurestore.online.layout import Record

_LAWS = ("add", "min", "max", "raw")  # column order in the dense array
_RAW = ("count", *spec.LATEST)  # a latest value's columns, as stored (not accumulated)
_INTEGERS = frozenset({"count", "distinct"})
_SUMS = frozenset({"sum", "sumsq"})
_LAW = {p.name: p.merge for p in spec.PARTS}
_SHIFT = np.uint64(HASH_BITS)  # sketch hashes are below 2**HASH_BITS
_PACKED_CELLS = 1 << 11  # (sketch, row) cells that fit above a hash in 64 bits
_VIEW_KEY = float(1 << 40)  # view * _VIEW_KEY + tile ms: a (view, granularity) key


class _NumpyOps:
    """`spec.Ops` over float64 numpy arrays (NaN is null)."""

    def count(self, n: np.ndarray) -> np.ndarray:
        return self.zero_if_null(n)

    def zero_if_null(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.where(np.isnan(x), 0.0, x)
        return out

    def where(self, condition: np.ndarray, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.where(condition, x, np.nan)
        return out

    def at_least_zero(self, x: np.ndarray) -> np.ndarray:
        # Polars' max_horizontal skips nulls: max(null, 0.0) is 0.0.
        out: np.ndarray = np.fmax(x, 0.0)
        return out

    def sqrt(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.sqrt(x)
        return out

    def as_float(self, x: np.ndarray) -> np.ndarray:
        return x

    def estimate(self, sketch: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        size, kth = sketch
        approximate = np.rint(SCALE / (kth + 1.0))
        out: np.ndarray = np.where(size < K, size, approximate)
        return out


_NUMPY = _NumpyOps()


@dataclass(frozen=True)
class _FinishArrays:
    windows: np.ndarray  # window tiles, as a column
    latest: np.ndarray


@dataclass
class _Finish:
    """The features of one aggregation (of a numeric result), finished together."""

    outputs: list[tuple[int, int]] = field(default_factory=list)  # (request, feature)
    tiles: list[int] = field(default_factory=list)  # window tiles
    columns: dict[str, list[int]] = field(default_factory=dict)  # part -> dense column
    latest: list[int] = field(default_factory=list)  # latest value index, for `last`
    arrays: _FinishArrays | None = None  # the same as numpy arrays (`freeze`)

    def freeze(self) -> None:
        """Make `arrays`, once the plan's features are all added."""
        tiles = np.array(self.tiles, dtype=np.int64)
        self.arrays = _FinishArrays(tiles[:, None], np.array(self.latest, dtype=np.int64))

    def add(
        self, output: tuple[int, int], feature: Feature,
        column: dict[tuple[int, int, str, str, str], int], latest: int,
    ) -> None:  # fmt: skip
        self.outputs.append(output)
        self.tiles.append(feature.window.tiles)
        if feature.function == "last":
            self.latest.append(latest)
        key = (output[0], feature.window.tile_ms, feature.column)
        for p in spec.NEEDS[feature.function]:
            if p not in spec.LATEST:
                self.columns.setdefault(p, []).append(column[(*key, p, _LAW[p])])


@dataclass
class _ViewTable:
    """How one view's records are scattered into the dense array: per granularity
    (``tiles_ms`` ascending) its depth, and per record slot read its dense column
    (padded with the spare column), its latest value and its sketch."""

    tiles_ms: list[int]
    depths: list[int]
    sources: list[list[int]]  # per granularity: slots read in the record's fixed part
    targets: list[list[int]]  # per granularity: their dense columns
    latest: list[list[int]]  # per granularity: its latest values' indices
    sketches: list[list[int]]  # per granularity, per sketched value: sketch index, or -1
    sizes: list[int]  # the record's sketch size slots
    width: int  # the record's fixed part, in doubles


@dataclass(frozen=True)
class _Stacked:
    """Every view's `_ViewTable` stacked: one row per (view, granularity), found by
    ``keys`` (view * `_VIEW_KEY` + tile ms, ascending), so ONE pass over every view's
    records (a matrix of them all, `stacked_width` wide) scatters them. Padding reads
    the NaN column into the spare dense column; a view's missing size slots read the
    zero column."""

    keys: np.ndarray
    depths: np.ndarray
    sources: np.ndarray  # (rows, reads)
    targets: np.ndarray  # (rows, reads)
    latest: np.ndarray  # (rows, latest reads), padded with the spare latest row
    sketches: np.ndarray  # (rows, sketched values), -1 padding
    sizes: np.ndarray  # (views, sketched values): sketch size slots
    widths: np.ndarray  # (views,): fixed part in doubles
    width: int  # the stacked matrix's width: widest record, then the NaN and zero columns

    @property
    def nan(self) -> int:
        return self.width - 2

    @cached_property
    def tails(self) -> list[bytes]:
        """Per view, the bytes that follow its records' fixed part in the matrix: NaN up
        to the widest record, then the NaN and zero columns."""
        nan, zero = struct.pack("<d", np.nan), struct.pack("<d", 0.0)
        return [nan * (self.width - 1 - int(w)) + zero for w in self.widths.tolist()]

    @property
    def zero(self) -> int:
        return self.width - 1

    @classmethod
    def of(cls, tables: list[_ViewTable], spare: int, spare_latest: int) -> _Stacked:
        width = max((t.width for t in tables), default=0) + 2
        nan, zero = width - 2, width - 1
        rows = [(i, g) for i, t in enumerate(tables) for g in range(len(t.tiles_ms))]

        def padded(lists: list[list[int]], fill: int) -> np.ndarray:
            size = max((len(x) for x in lists), default=0)
            return np.array([x + [fill] * (size - len(x)) for x in lists],
                            dtype=np.int64).reshape(len(lists), size)  # fmt: skip

        return cls(
            np.array([i * _VIEW_KEY + tables[i].tiles_ms[g] for i, g in rows], dtype=np.float64),
            np.array([tables[i].depths[g] for i, g in rows], dtype=np.float64),
            padded([tables[i].sources[g] for i, g in rows], nan),
            padded([tables[i].targets[g] for i, g in rows], spare),
            padded([tables[i].latest[g] for i, g in rows], spare_latest),
            padded([tables[i].sketches[g] for i, g in rows], -1),
            padded([t.sizes for t in tables], zero),
            np.array([t.width for t in tables], dtype=np.int64),
            width,
        )  # fmt: skip


@dataclass(frozen=True)
class _Gather:
    """Every merged part the finishes read, taken from the dense array in ONE gather:
    its rows [lo, hi) per (aggregation, part) (`blocks`), the sums' rows first."""

    columns: np.ndarray  # dense column per row
    tiles: np.ndarray  # window tiles per row
    blocks: dict[tuple[str, str], tuple[int, int]]
    sums: int  # rows [0, sums) hold sums: a -0.0 fold is 0.0 there

    @classmethod
    def of(cls, finishes: dict[spec.Aggregation, _Finish]) -> _Gather:
        columns: list[int] = []
        tiles: list[int] = []
        blocks: dict[tuple[str, str], tuple[int, int]] = {}
        sums = 0
        for first in (True, False):
            for agg, finish in finishes.items():
                for p, cols in finish.columns.items():
                    if (p in _SUMS) == first:
                        blocks[(agg, p)] = (len(columns), len(columns) + len(cols))
                        columns += cols
                        tiles += finish.tiles
            if first:
                sums = len(columns)
        as_array = np.array(columns, dtype=np.int64), np.array(tiles, dtype=np.int64)
        return cls(*as_array, blocks, sums)


@dataclass
class LookupPlan:
    """A compiled lookup of several views' features (see the module docstring)."""

    records: list[Record]
    features: list[list[Feature]]
    tables: _Stacked
    laws: dict[str, tuple[int, int]]  # law -> its [start, end) of dense columns
    raw: dict[str, np.ndarray]  # raw part -> dense column per latest value
    finishes: dict[spec.Aggregation, _Finish]
    gather: _Gather
    texts: _Texts
    n_latest: int
    distinct: list[tuple[int, int]]  # (request, feature) of each distinct feature
    distinct_sketches: np.ndarray  # its sketch
    distinct_tiles: np.ndarray  # its window's tiles
    n_sketches: int
    n_columns: int
    newest: int  # the records' newest event time slot (in the header: every view's)

    @cached_property
    def outputs(self) -> list[tuple[int, str]]:
        """(request, feature name) of every value `run` returns, in its order."""
        return [(i, f.name) for i, features in enumerate(self.features) for f in features]

    @cached_property
    def cells_per_row(self) -> int:
        """Dense cells one entity row can take (at the longest window's depth)."""
        depth = int(self.tables.depths.max()) if len(self.tables.depths) else 1
        return (self.n_columns + 1) * depth

    @classmethod
    def of(cls, requests: Sequence[tuple[FeatureView, Sequence[str], Record]]) -> LookupPlan:
        features = [[view.feature(n) for n in names] for view, names, _ in requests]
        # (view, g, value, part, law): a latest value's count is read raw and, for a
        # count feature of the same window, accumulated too: two columns.
        reads: dict[tuple[int, int, str, str, str], None] = {}
        latest: dict[tuple[int, int, str], int] = {}
        sketches: dict[tuple[int, int, str], int] = {}
        for i, wanted in enumerate(features):
            for f in wanted:
                key = (i, f.window.tile_ms, f.column)
                if f.function == "distinct":
                    sketches.setdefault(key, len(sketches))
                elif f.function == "last":
                    latest.setdefault(key, len(latest))
                    reads |= {(*key, p, "raw"): None for p in _RAW}
                else:
                    reads |= {(*key, p, _LAW[p]): None for p in spec.NEEDS[f.function]}
        ordered = sorted(reads, key=lambda r: _LAWS.index(r[4]))
        column = {r: c for c, r in enumerate(ordered)}
        laws = {}
        for law in _LAWS:
            inside = [c for r, c in column.items() if r[4] == law]
            laws[law] = (min(inside, default=0), max(inside, default=-1) + 1)
        raw = {p: np.array([column[(*k, p, "raw")] for k in latest], dtype=np.int64)
               for p in _RAW}  # fmt: skip
        tables = [_table(i, view, record, wanted, column, latest, sketches)
                  for i, ((view, _, record), wanted) in enumerate(zip(requests, features,
                                                                       strict=True))]  # fmt: skip
        finishes: dict[spec.Aggregation, _Finish] = {}
        texts: list[tuple[int, int, int, int, int, list[int]]] = []
        distinct: list[tuple[int, int, int, int]] = []
        for i, ((_, _, record), wanted) in enumerate(zip(requests, features, strict=True)):
            for j, f in enumerate(wanted):
                key = (i, f.window.tile_ms, f.column)
                if f.function == "distinct":
                    distinct.append((i, j, sketches[key], f.window.tiles))
                elif f.function == "last" and f.column in record.text_values:
                    earlier = record.texts[: record.texts.index(f.column)]
                    texts.append((i, j, latest[key], f.window.tiles,
                                  record.slots[(f.column, "last")],
                                  [record.slots[(n, "last")] for n in earlier]))  # fmt: skip
                else:
                    finishes.setdefault(f.function, _Finish()).add(
                        (i, j), f, column, latest.get(key, -1)
                    )
        for finish in finishes.values():
            finish.freeze()
        stacked = _Stacked.of(tables, len(ordered), len(latest))
        return cls(
            [r for _, _, r in requests], features, stacked, laws,
            raw, finishes, _Gather.of(finishes),
            _Texts.of(texts, stacked.zero),
            len(latest), [(i, j) for i, j, _, _ in distinct],
            np.array([s for _, _, s, _ in distinct], dtype=np.int64),
            np.array([t for _, _, _, t in distinct], dtype=np.int64), len(sketches),
            len(ordered), requests[0][2].newest_slot if requests else 0,
        )  # fmt: skip

    def run(
        self, tiles: Sequence[Sequence[Sequence[bytes]]], at: int
    ) -> tuple[list[list[list[Any]]], list[list[bool]], list[list[int | None]]]:
        """Per request: its features' values for each entity row at ``at``, whether each
        row holds any record, and each row's newest event time. ``tiles[i][row]`` is
        request i's tile records of that row (every request has the same rows)."""
        return _Run(self, tiles, at).values()


@dataclass(frozen=True)
class _Texts:
    """Every text ``last`` feature of a plan, read at once: where each one's text is in
    the record holding it (after the fixed part and the sketches, after the texts of the
    values before it)."""

    outputs: list[tuple[int, int]]  # (request, feature)
    values: np.ndarray  # latest value index
    tiles: np.ndarray  # window tiles
    views: np.ndarray  # request
    lengths: np.ndarray  # the slot of its text's length (the ``last`` slot)
    earlier: np.ndarray  # (features, texts before it): their length slots, zero-padded

    @classmethod
    def of(cls, rows: list[tuple[int, int, int, int, int, list[int]]], zero: int) -> _Texts:
        width = max((len(r[5]) for r in rows), default=0)
        values, tiles, views, lengths = (
            np.array([r[k] for r in rows], dtype=np.int64) for k in (2, 3, 0, 4)
        )
        return cls(
            [(r[0], r[1]) for r in rows], values, tiles, views, lengths,
            np.array([r[5] + [zero] * (width - len(r[5])) for r in rows],
                     dtype=np.int64).reshape(len(rows), width),
        )  # fmt: skip


def _table(  # noqa: PLR0917
    i: int,
    view: FeatureView,
    record: Record,
    wanted: list[Feature],
    column: dict[tuple[int, int, str, str, str], int],
    latest: dict[tuple[int, int, str], int],
    sketches: dict[tuple[int, int, str], int],
) -> _ViewTable:
    """View ``i``'s scatter table (`_ViewTable`)."""
    tiles = sorted({f.window.tile_ms for f in wanted})
    depths = [max(f.window.tiles for f in wanted if f.window.tile_ms == g) for g in tiles]
    sources, targets, lasts, sketched = [], [], [], []
    for g in tiles:
        mine = [(r, c) for r, c in column.items() if r[0] == i and r[1] == g]
        sources.append([record.slots[(value, part)] for (_, _, value, part, _), _ in mine])
        targets.append([c for _, c in mine])
        lasts.append([n for (v, t, _), n in latest.items() if v == i and t == g])
        sketched.append([sketches.get((i, g, name), -1) for name in record.sketched])
    return _ViewTable(
        tiles, depths, sources, targets, lasts, sketched,
        [record.slots[(n, "size")] for n in record.sketched], record.width,
    )  # fmt: skip


class _Run:
    """One lookup through a plan: every view's records in one matrix (`_Stacked`)."""

    def __init__(self, plan: LookupPlan, tiles: Sequence[Sequence[Sequence[bytes]]], at: int):
        views = len(plan.records)
        self.plan, self.at = plan, at
        self.n_rows = n_rows = len(tiles[0]) if views else 0
        # Per-record steps run in C (map, chain, join), not in Python loops: a lookup of
        # 100 entities holds some 10,000 records.
        counts = list(chain.from_iterable(map(len, request) for request in tiles))
        per_view = [list(chain.from_iterable(request)) for request in tiles]
        self.records: list[bytes] = list(chain.from_iterable(per_view))
        # Every record's fixed part followed by its view's tail (`_Stacked.tails`): one
        # buffer, one matrix.
        stack, pieces = plan.tables, list[bytes]()
        for record, tail, held in zip(plan.records, stack.tails, per_view, strict=True):
            if held:
                fixed = (
                    held if record.fixed_only else map(itemgetter(slice(8 * record.width)), held)
                )
                pieces += (tail.join(fixed), tail)
        joined = b"".join(pieces)
        if len(joined) != 8 * stack.width * len(self.records):
            for record, held in zip(plan.records, per_view, strict=True):
                record.matrix(held)  # raises, naming the view
        self.matrix = np.frombuffer(joined, dtype="<f8").reshape(-1, stack.width)
        cell = np.repeat(np.arange(views * n_rows), counts)  # view * n_rows + row
        self.view, rows = np.divmod(cell, max(n_rows, 1))
        self.found: list[list[bool]] = (
            (np.array(counts, dtype=np.int64) > 0).reshape(views, n_rows).tolist()
        )
        self.newest = self._newest(counts)
        self._keep(rows)
        self._scatter()

    def _newest(self, counts: list[int]) -> list[list[int | None]]:
        """Per (view, row), the newest event time of any of its values (None: none)."""
        views, n_rows = len(self.plan.records), self.n_rows
        newest = np.full(views * n_rows, np.nan)
        if len(self.matrix):
            held = np.flatnonzero(counts)
            starts = np.cumsum([0, *counts])[held]
            newest[held] = np.fmax.reduceat(self.matrix[:, self.plan.newest], starts)
        return [[None if t != t else int(t) for t in per_view]  # noqa: PLR0124 - NaN: none
                for per_view in newest.reshape(views, n_rows).tolist()]  # fmt: skip

    def _keep(self, rows: np.ndarray) -> None:
        """The records inside a window of their (view, granularity): `keep` (their
        index), `where` (their row of the stacked tables), `ages` and `rows`."""
        stack, matrix = self.plan.tables, self.matrix
        key = self.view * _VIEW_KEY + matrix[:, 0]
        where = np.minimum(np.searchsorted(stack.keys, key), max(len(stack.keys) - 1, 0))
        age = np.floor_divide(self.at, matrix[:, 0]) - matrix[:, 1]
        if len(stack.keys):
            keep = np.flatnonzero((stack.keys[where] == key) & (age >= 0)
                                  & (age < stack.depths[where]))  # fmt: skip
        else:
            keep = np.zeros(0, dtype=np.int64)
        self.keep, self.where, self.rows = keep, where[keep], rows[keep]
        self.ages = age[keep].astype(np.int64)
        self.depth = int(self.ages.max()) + 1 if len(keep) else 1

    def _scatter(self) -> None:
        """The dense (column, row, age) array, accumulated along the ages, and per
        latest value, row and age the record holding it (`which`)."""
        plan, stack = self.plan, self.plan.tables
        dense = np.empty((plan.n_columns + 1, self.n_rows, self.depth))
        dense[: plan.laws["add"][1]] = 0.0  # an absent tile adds nothing
        dense[plan.laws["add"][1] :] = np.nan  # and is null for everything else
        which = np.full((plan.n_latest + 1, self.n_rows, self.depth), -1, dtype=np.int64)
        if len(self.keep):
            # Flat indices: one index array per gather or scatter, not one per axis.
            where, keep, cells = self.where, self.keep, self.n_rows * self.depth
            at = (self.rows * self.depth + self.ages)[:, None]  # (row, age) of each record
            values = np.take(self.matrix, keep[:, None] * stack.width + stack.sources[where])
            np.put(dense, stack.targets[where] * cells + at, values)
            if stack.latest.shape[1]:
                latest = stack.latest[where]
                np.put(which, latest * cells + at, np.repeat(keep, latest.shape[1]))
        for law, accumulate in (("add", np.cumsum), ("min", np.fmin.accumulate),
                                ("max", np.fmax.accumulate)):  # fmt: skip
            lo, hi = plan.laws[law]
            if hi > lo:
                accumulate(dense[lo:hi], axis=2, out=dense[lo:hi])
        self.dense, self.which = dense, which
        self.held_age: np.ndarray | None = None
        self.held_any: np.ndarray | None = None
        if plan.n_latest:  # per latest value and row: the newest age holding a value
            held_tiles = dense[plan.raw["count"]] > 0
            self.held_age, self.held_any = held_tiles.argmax(axis=2), held_tiles.any(axis=2)

    def values(self) -> tuple[list[list[list[Any]]], list[list[bool]], list[list[int | None]]]:
        plan = self.plan
        out: list[list[list[Any]]] = [[[] for _ in f] for f in plan.features]
        gather = plan.gather
        merged = self.dense[gather.columns, :, np.minimum(gather.tiles, self.depth) - 1]
        merged[: gather.sums] += 0.0  # a -0.0 fold is 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            finished = [(agg, finish, spec.finish(agg, self._parts(agg, finish, merged), _NUMPY))
                        for agg, finish in plan.finishes.items()]  # fmt: skip
        for agg, finish, values in finished:
            integers = agg in _INTEGERS
            for (i, j), column in zip(finish.outputs, values.tolist(), strict=True):
                out[i][j] = ([int(v) for v in column] if integers
                             else [None if v != v else v for v in column])  # noqa: PLR0124  # fmt: skip
        if plan.texts.outputs:
            for (i, j), column in zip(plan.texts.outputs, self._texts(), strict=True):
                out[i][j] = column
        if plan.distinct:
            self._distinct(out)
        return out, self.found, self.newest

    def _parts(self, agg: spec.Aggregation, finish: _Finish, merged: np.ndarray) -> Any:
        arrays, blocks = finish.arrays, self.plan.gather.blocks
        assert arrays is not None

        def part(p: str) -> np.ndarray:
            if p in spec.LATEST:
                assert self.held_age is not None
                assert self.held_any is not None
                age = self.held_age[arrays.latest]
                inside = self.held_any[arrays.latest] & (age < arrays.windows)
                rows = np.arange(self.n_rows)[None, :]
                taken = self.dense[self.plan.raw[p][arrays.latest][:, None], rows, age]
                out: np.ndarray = np.where(inside, taken, np.nan)
                return out
            lo, hi = blocks[(agg, p)]
            return merged[lo:hi]

        return part

    def _texts(self) -> list[list[str | None]]:
        """Every text ``last`` feature (`_Texts`), all at once."""
        texts, stack, n_rows = self.plan.texts, self.plan.tables, self.n_rows
        if not self.records:
            return [[None] * n_rows for _ in texts.outputs]
        assert self.held_age is not None
        assert self.held_any is not None
        age = self.held_age[texts.values]  # (features, rows)
        inside = (self.held_any[texts.values] & (age < texts.tiles[:, None])).tolist()
        chosen = self.which[texts.values[:, None], np.arange(n_rows)[None, :], age]
        at = np.maximum(chosen, 0)[:, :, None]  # any record where none is chosen
        matrix, views = self.matrix, texts.views
        sketches = matrix[at, stack.sizes[views][:, None, :]].sum(axis=2)
        before = np.fmax(matrix[at, texts.earlier[:, None, :]], 0.0).sum(axis=2)  # null: 0
        starts = (8 * (stack.widths[views][:, None] + sketches) + before).tolist()
        lengths = matrix[at[:, :, 0], texts.lengths[:, None]].tolist()
        records, text = self.records, self.plan.records[0].text  # `Record.text`: static
        picked = zip(chosen.tolist(), starts, lengths, inside, strict=True)
        return [[text(records[r], b, n) if ok else None
                 for r, b, n, ok in zip(*picks, strict=True)] for picks in picked]  # fmt: skip

    def _distinct(self, out: list[list[list[Any]]]) -> None:
        """Every distinct count at once: (sketch, row, hash) kept at its newest age."""
        plan, n_rows, depth, stack = self.plan, self.n_rows, self.depth, self.plan.tables
        keep = self.keep
        view = self.view[keep]
        sizes = self.matrix[keep[:, None], stack.sizes[view]].astype(np.int64)  # (kept, values)
        totals = sizes.sum(axis=1)
        held = np.flatnonzero(totals)
        starts = (8 * stack.widths[view[held]]).tolist()
        ends = (8 * (stack.widths[view[held]] + totals[held])).tolist()
        records = map(self.records.__getitem__, keep[held].tolist())
        cut = cast("Callable[[bytes, slice], bytes]", getitem)  # bytes[a:b], called in C
        joined = b"".join(map(cut, records, map(slice, starts, ends)))
        hashes = np.frombuffer(joined, dtype="<f8").astype(np.uint64)
        sizes = sizes[held]
        per_record = np.repeat(held, totals[held])  # index into the kept records
        value_of = np.repeat(np.arange(sizes.size) % max(sizes.shape[1], 1), sizes.ravel())
        sketch = stack.sketches[self.where[per_record], value_of]
        asked = sketch >= 0
        sketch, hashes = sketch[asked], hashes[asked]
        row, age = self.rows[per_record][asked], self.ages[per_record][asked]
        # (sketch, row) as one cell number; each (cell, hash) is kept once, at its newest
        # (smallest) age; hashes ascend within a cell after the sort.
        owner = sketch * n_rows + row
        if plan.n_sketches * n_rows <= _PACKED_CELLS:  # cell and hash in one 64-bit key
            key = (owner.astype(np.uint64) << _SHIFT) | hashes
            order = np.argsort(key)
            key = key[order]
            first = np.ones(len(order), dtype=bool)
            np.not_equal(key[1:], key[:-1], out=first[1:])
        else:
            order = np.lexsort((hashes, owner))
            first = np.ones(len(order), dtype=bool)
            first[1:] = (owner[order][1:] != owner[order][:-1]) | (
                hashes[order][1:] != hashes[order][:-1]
            )
        starts = np.flatnonzero(first)
        owner, hashes = owner[order][starts], hashes[order][starts]
        age = np.minimum.reduceat(age[order], starts) if len(starts) else age[:0]
        counts = np.bincount(owner * depth + age, minlength=plan.n_sketches * n_rows * depth)
        running = counts.reshape(plan.n_sketches, n_rows, depth).cumsum(axis=2)
        asked = plan.distinct_sketches
        tiles = np.minimum(plan.distinct_tiles, depth) - 1
        size = running[asked, :, tiles].astype(np.float64)  # (features, rows)
        beyond = np.nonzero(size >= K)
        if len(beyond[0]):
            kth = np.zeros_like(size)
            for f, r in zip(*beyond, strict=True):
                # Beyond K: the K-th smallest hash of the window (hashes ascend per cell).
                inside = (owner == asked[f] * n_rows + r) & (age <= tiles[f])
                kth[f, r] = float(hashes[inside][K - 1])
            values = _NUMPY.estimate((size, kth))
        else:  # every window below K: the estimate is the exact count
            values = size
        for (i, j), column in zip(plan.distinct, values.tolist(), strict=True):
            out[i][j] = [int(v) for v in column]

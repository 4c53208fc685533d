"""The small-read execution of the window engine: online lookups without Polars frames.

A lookup reads a few entities' tile records (`featurestore.online.layout.Record`) of a
few views and needs their window values at ONE request time. Polars' fixed cost per
call (0.3-1.5 ms a step) would dominate it, so this module runs the merge laws of
`featurestore.features.spec` in loops compiled by numba (`featurestore.features.kernels`)
and its finishing formulas on numpy arrays. A `LookupPlan` is made once per request
shape (views, features, text values); each lookup then costs three compiled calls and a
fixed number of numpy operations, whatever the number of features, views or entity
rows:

- the fixed parts of every view's records are stacked in ONE matrix (padded to the
  widest record), and one table per (view, granularity) (`_Stacked`) says where each
  record's parts go, so one pass (`kernels.scatter`) places every view's records;
- every part a feature reads, of every view and granularity, is a column of ONE dense
  array laid out by (column, entity row, age), where age = ``floor(at / g) - tile``
  (0 for the request time's own tile). A window of T tiles is the first T ages, so ONE
  accumulation along the age axis answers every window: a running sum from age 0 is
  the specified fold of ``add`` (newest tile first, starting at 0.0; an absent tile
  adds 0.0, which changes no sum), running min/max are ``min``/``max`` (ties keep the
  newest tile's value), and the newest age holding a value (a positive count) gives
  ``latest``;
- `spec.finish` runs once per aggregation over a (features x entity rows) array: the
  formula the Polars engine evaluates, so both agree bit for bit
  (tests/unit/features/test_small_read.py);
- sketches (``union``, `kernels.distinct`): each (sketch, row) cell's hashes are
  sorted once, each kept at the newest age it was seen; a window's distinct count is
  the number younger than its tiles, and the K-th smallest of them gives the estimate;
- a text ``last`` is sliced from the record holding it (`kernels.texts` finds where),
  every one of them at once.

The kernels compile on first use (seconds after an install, then loaded from numba's
cache); `warm` does it ahead of the first request.

Tiles later than the request time's tile are ignored (they cannot exist online: their
events have not arrived yet); tiles older than a window are outside it, as in
`featurestore.features.windows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np

from featurestore.features import spec
from featurestore.features.definitions import Feature, FeatureView
from featurestore.features.sketch import SCALE, K

if TYPE_CHECKING:  # the online store's record format, which passes its Record in
    from featurestore.online.layout import Record

_LAWS = ("add", "min", "max", "raw")  # column order in the dense array
_RAW = ("count", *spec.LATEST)  # a latest value's columns, as stored (not accumulated)
_INTEGERS = frozenset({"count", "distinct"})
_SUMS = frozenset({"sum", "sumsq"})
_LAW = {p.name: p.merge for p in spec.PARTS}
VIEW_KEY = float(1 << 40)  # view * VIEW_KEY + tile ms: a (view, granularity) key


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
    exact: bool  # whether a record is its fixed part only (no sketches, no texts)


@dataclass(frozen=True)
class _Stacked:
    """Every view's `_ViewTable` stacked: one row per (view, granularity), found by
    ``keys`` (view * `VIEW_KEY` + tile ms, ascending), so ONE pass over every view's
    records (a matrix of them all, `width` wide: `kernels.stack`) scatters them. Padding reads
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
    exact: np.ndarray  # (views,): whether a record is its fixed part only
    width: int  # the stacked matrix's width: widest record, then the NaN and zero columns

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
            np.array([i * VIEW_KEY + tables[i].tiles_ms[g] for i, g in rows], dtype=np.float64),
            np.array([tables[i].depths[g] for i, g in rows], dtype=np.int64),
            padded([tables[i].sources[g] for i, g in rows], nan),
            padded([tables[i].targets[g] for i, g in rows], spare),
            padded([tables[i].latest[g] for i, g in rows], spare_latest),
            padded([tables[i].sketches[g] for i, g in rows], -1),
            padded([t.sizes for t in tables], zero),
            np.array([t.width for t in tables], dtype=np.int64),
            np.array([t.exact for t in tables], dtype=np.bool_),
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
    def law_ends(self) -> np.ndarray:
        """Where the add, min and max columns of the dense array end (in this order)."""
        sizes = [self.laws[law][1] - self.laws[law][0] for law in _LAWS[:3]]
        return np.cumsum(sizes, dtype=np.int64)

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
        [record.slots[(n, "size")] for n in record.sketched], record.width, record.fixed_only,
    )  # fmt: skip


class _Run:
    """One lookup through a plan: every view's records in one matrix (`_Stacked`),
    merged by the compiled loops of `featurestore.features.kernels`."""

    def __init__(self, plan: LookupPlan, tiles: Sequence[Sequence[Sequence[bytes]]], at: int):
        from featurestore.features import kernels  # numba: imported by the first lookup

        views = len(plan.records)
        self.plan, self.at = plan, at
        self.n_rows = n_rows = len(tiles[0]) if views else 0
        # Per-record steps run in C (map, chain, join), not in Python loops: a lookup of
        # 100 entities holds some 10,000 records.
        counts = list(chain.from_iterable(map(len, request) for request in tiles))
        per_view = [list(chain.from_iterable(request)) for request in tiles]
        self.records: list[bytes] = list(chain.from_iterable(per_view))
        # Every record in ONE buffer (the sketches and texts read from it too), every
        # fixed part in ONE matrix (`kernels.stack`).
        stack = plan.tables
        lengths = np.fromiter(map(len, self.records), dtype=np.int64, count=len(self.records))
        self.starts = np.cumsum(lengths) - lengths
        self.buffer = np.frombuffer(b"".join(self.records), dtype=np.uint8)
        cells = np.array(counts, dtype=np.int64)
        self.matrix, bad = kernels.stack(self.buffer, self.starts, lengths, cells, n_rows,
                                         stack.widths, stack.exact, stack.width)  # fmt: skip
        if bad >= 0:
            raise plan.records[bad].size_error()
        (self.dense, self.which, self.where, self.ages, self.rows, self.view, newest,
         self.held_age, self.held_any, self.depth) = kernels.scatter(
            self.matrix, cells, n_rows, at, stack.keys,
            stack.depths, stack.sources, stack.targets, stack.latest, plan.n_columns + 1,
            plan.law_ends, plan.raw["count"], plan.newest,
        )  # fmt: skip
        self.found: list[list[bool]] = (cells > 0).reshape(views, n_rows).tolist()
        self.newest: list[list[int | None]] = [
            [None if t != t else int(t) for t in per_view]  # noqa: PLR0124 - NaN: none
            for per_view in newest.reshape(views, n_rows).tolist()
        ]

    def values(self) -> tuple[list[list[list[Any]]], list[list[bool]], list[list[int | None]]]:
        plan = self.plan
        out: list[list[list[Any]]] = [[[] for _ in f] for f in plan.features]
        gather = plan.gather
        merged = self.dense[gather.columns, :, np.minimum(gather.tiles, self.depth) - 1]
        merged[: gather.sums] += 0.0  # a -0.0 fold is 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            finished = [(agg, finish, spec.finish(agg, self._parts(agg, finish, merged), _NUMPY))
                        for agg, finish in plan.finishes.items()]  # fmt: skip
        for integers in (False, True):
            _fill(out, [(finish.outputs, values) for agg, finish, values in finished
                        if (agg in _INTEGERS) == integers], integers=integers)  # fmt: skip
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
        """Every text ``last`` feature (`_Texts`), all at once: `kernels.texts` finds
        where each one's text is, then it is sliced from its record."""
        from featurestore.features import kernels

        texts, stack = self.plan.texts, self.plan.tables
        chosen, starts, lengths = kernels.texts(
            self.held_age, self.held_any, self.which, self.matrix, texts.values, texts.tiles,
            texts.views, texts.lengths, texts.earlier, stack.sizes, stack.widths,
        )  # fmt: skip
        records, text = self.records, self.plan.records[0].text  # `Record.text`: static
        picked = zip(chosen.tolist(), starts.tolist(), lengths.tolist(), strict=True)
        return [[text(records[r], b, n) if r >= 0 else None
                 for r, b, n in zip(*picks, strict=True)] for picks in picked]  # fmt: skip

    def _distinct(self, out: list[list[list[Any]]]) -> None:
        """Every distinct count at once (`kernels.distinct`), finished by the spec."""
        from featurestore.features import kernels

        plan, stack = self.plan, self.plan.tables
        size, kth = kernels.distinct(
            self.buffer, self.starts, self.matrix, self.where, self.ages, self.rows, self.view,
            self.n_rows, stack.sizes, stack.widths, stack.sketches, plan.n_sketches,
            plan.distinct_sketches, plan.distinct_tiles, K,
        )  # fmt: skip
        _fill(out, [(plan.distinct, _NUMPY.estimate((size, kth)))], integers=True)


def _fill(
    out: list[list[list[Any]]],
    finished: list[tuple[list[tuple[int, int]], np.ndarray]],
    *,
    integers: bool,
) -> None:
    """``out[request][feature]``: the finished values of every (request, feature) of
    ``finished`` as Python lists, in one conversion: integers, or floats with None
    for NaN (null)."""
    if not finished:
        return
    outputs = [output for outputs, _ in finished for output in outputs]
    values = np.concatenate([v for _, v in finished]) if len(finished) > 1 else finished[0][1]
    if integers:
        columns = values.astype(np.int64).tolist()
    else:
        columns = values.tolist()
        nulls = np.isnan(values).any(axis=1).tolist()
        columns = [[None if v != v else v for v in column] if null else column  # noqa: PLR0124
                   for column, null in zip(columns, nulls, strict=True)]  # fmt: skip
    for (i, j), column in zip(outputs, columns, strict=True):
        out[i][j] = column


def warm() -> None:
    """Compile the kernels of `featurestore.features.kernels`, or load them from numba's
    cache, by running one lookup of every aggregation (a text ``last`` and a distinct
    count included) over a few records: with the types a real lookup passes, so that no
    later lookup compiles. A feature server calls this before it takes requests; the
    first compile after an install takes several seconds, a cached load well under one.
    """
    import polars as pl

    from featurestore.features.aggregates import tile_partials
    from featurestore.online.layout import Record

    view = FeatureView.model_validate(
        {
            "name": "warm", "source": "warm-value", "entity": "key", "owner": "featurestore",
            "aggregations": [
                {"column": "x", "functions": list(spec.AGGREGATIONS), "windows": ["2m/1m"]},
                {"column": "s", "functions": ["last", "distinct"], "windows": ["2m/1m"]},
            ],
        }
    )  # fmt: skip
    events = pl.DataFrame(
        {"key": ["a", "a"], "ts": [0, 60_000], "x": [1.0, None], "s": ["p", None],
         "offset": [0, 1]},
        schema={"key": pl.String, "ts": pl.Int64, "x": pl.Float64, "s": pl.String,
                "offset": pl.Int64},
    )  # fmt: skip
    record = Record(view, frozenset({"s"}))
    held = [record.encode(tile_partials(events, ["key"], "ts", view.values, g), g)
            for g in view.tiles_ms]  # fmt: skip
    plan = LookupPlan.of([(view, [f.name for f in view.features], record)])
    plan.run([[[r for rs in held for r in rs], []]], 90_000)

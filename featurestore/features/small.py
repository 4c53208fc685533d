"""The small-read execution of the window engine: online lookups without Polars frames.

A lookup reads a few entities' tile records (`featurestore.online.layout.Record`) of a
few views and needs their window values at ONE request time. Polars' fixed cost per
call (0.3-1.5 ms a step) would dominate it, and so would numpy's (a few microseconds
a call, some hundred calls): this module runs the merge laws and the finishing of
`featurestore.features.spec` in loops compiled by numba (`featurestore.features.kernels`).
A `LookupPlan` is made once per request shape (views, features, text values); each
lookup then costs five compiled calls and a few list conversions, whatever the number
of features, views or entity rows:

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
- `spec.finish` is traced once per aggregation (`_Traced`: its ``Ops`` record the
  formula as instructions) and `kernels.finish` runs those instructions for every
  feature and row: the formula the Polars engine evaluates, op for op, so both agree
  bit for bit (tests/unit/features/test_small_read.py);
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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np

from featurestore.errors import ConfigError
from featurestore.features import spec
from featurestore.features.definitions import Feature, FeatureView
from featurestore.features.sketch import K

if TYPE_CHECKING:  # the online store's record format, which passes its Record in
    from featurestore.online.layout import Record

_LAWS = ("add", "min", "max", "raw")  # column order in the dense array
_RAW = ("count", *spec.LATEST)  # a latest value's columns, as stored (not accumulated)
_INTEGERS = frozenset({"count", "distinct"})
_SUMS = frozenset({"sum", "sumsq"})
_LAW = {p.name: p.merge for p in spec.PARTS}
VIEW_KEY = float(1 << 40)  # view * VIEW_KEY + tile ms: a (view, granularity) key


# The finishing program: `spec.finish` traced once per aggregation (`_Traced`) into
# instructions that `kernels.finish` runs for every feature and entity row in one call.
# Its op codes...
OP_CONST, OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_GT, OP_GE = range(7)
OP_ZERO_IF_NULL, OP_WHERE, OP_AT_LEAST_ZERO, OP_SQRT, OP_ESTIMATE = range(7, 12)
# ...and how a feature's leaf (a merged part) is loaded.
LEAF_MERGED, LEAF_LATEST, LEAF_SIZE, LEAF_KTH = range(4)


def _operation(op: int, *, swap: bool = False) -> Callable[[_Sym, Any], _Sym]:
    """A `_Sym` operator: ``op`` on the symbol and the other operand (a constant when it
    is not a symbol), in that order, or the other way round (``swap``: ``1.0 - x``)."""

    def apply(self: _Sym, other: Any) -> _Sym:
        value = other if isinstance(other, _Sym) else _Sym(OP_CONST, float(other))
        return _Sym(op, value, self) if swap else _Sym(op, self, value)

    return apply


class _Sym:
    """A value in a traced `spec.finish`: a part (``op`` is its name), a constant, or an
    operation on other values."""

    __slots__ = ("args", "op")

    def __init__(self, op: str | int, *args: Any) -> None:
        self.op, self.args = op, args

    __add__ = _operation(OP_ADD)
    __radd__ = _operation(OP_ADD, swap=True)
    __sub__ = _operation(OP_SUB)
    __rsub__ = _operation(OP_SUB, swap=True)
    __mul__ = _operation(OP_MUL)
    __rmul__ = _operation(OP_MUL, swap=True)
    __truediv__ = _operation(OP_DIV)
    __rtruediv__ = _operation(OP_DIV, swap=True)
    __gt__ = _operation(OP_GT)
    __ge__ = _operation(OP_GE)


class _TraceOps:
    """`spec.Ops` over `_Sym`: each op is one instruction, which `kernels.finish` runs on
    doubles (NaN is null) as the Polars engine runs it on expressions."""

    def count(self, n: _Sym) -> _Sym:
        return _Sym(OP_ZERO_IF_NULL, n)

    def zero_if_null(self, x: _Sym) -> _Sym:
        return _Sym(OP_ZERO_IF_NULL, x)

    def where(self, condition: _Sym, x: _Sym) -> _Sym:
        return _Sym(OP_WHERE, condition, x)

    def at_least_zero(self, x: _Sym) -> _Sym:
        return _Sym(OP_AT_LEAST_ZERO, x)

    def sqrt(self, x: _Sym) -> _Sym:
        return _Sym(OP_SQRT, x)

    def as_float(self, x: _Sym) -> _Sym:
        return x

    def estimate(self, sketch: _Sym) -> _Sym:
        return _Sym(OP_ESTIMATE, sketch)


@dataclass(frozen=True)
class _Traced:
    """One aggregation's finishing program: the parts it reads (its leaves, in the first
    registers: one each, two for a sketch, its size then its K-th hash), instructions
    (op, destination, a, b) over the registers after them, and its constants."""

    leaves: tuple[str, ...]
    code: list[tuple[int, int, int, int]]
    constants: list[float]
    root: int
    registers: int

    @classmethod
    def of(cls, agg: spec.Aggregation) -> _Traced:
        parts: dict[str, _Sym] = {}
        root = spec.finish(agg, lambda name: parts.setdefault(name, _Sym(name)), _TraceOps())
        register: dict[int, int] = {}
        first = 0
        for name, leaf in parts.items():
            register[id(leaf)] = first
            first += 2 if name == spec.SKETCH.name else 1
        code: list[tuple[int, int, int, int]] = []
        constants: list[float] = []

        def emit(sym: _Sym) -> int:
            if id(sym) not in register:
                if sym.op == OP_CONST:
                    constants.append(sym.args[0])
                    a, b = len(constants) - 1, 0
                else:
                    a, b = ([emit(arg) for arg in sym.args] + [0])[:2]
                register[id(sym)] = first + len(code)
                code.append((int(sym.op), register[id(sym)], a, b))
            return register[id(sym)]

        top = emit(root)
        return cls(tuple(parts), code, constants, top, first + len(code))


@cache
def _traced(agg: spec.Aggregation) -> _Traced:
    return _Traced.of(agg)


@dataclass(frozen=True)
class _Program:
    """The finishing of every numeric feature of a plan (all but the text ``last``s), in
    ONE call of `kernels.finish`: per feature (``outputs``, in this order) its
    aggregation's instructions (``spans`` into ``code``), its leaves (kind, a, b, c; kind
    -1 pads) and its result register. Integers (counts, distinct counts) and doubles
    are turned into Python lists apart."""

    outputs: list[tuple[int, int]]  # (request, feature)
    code: np.ndarray  # (instructions, 4)
    constants: np.ndarray
    spans: np.ndarray  # (features, 2)
    leaves: np.ndarray  # (features, leaves, 4)
    roots: np.ndarray
    registers: int
    integers: np.ndarray  # indices of the integer features among ``outputs``
    doubles: np.ndarray

    @classmethod
    def of(cls, features: list[tuple[int, int, spec.Aggregation, list[tuple[int, ...]]]],
           traced: dict[spec.Aggregation, _Traced]) -> _Program:  # fmt: skip
        """``features``: (request, feature, aggregation, its leaves) each."""
        code: list[tuple[int, int, int, int]] = []
        constants: list[float] = []
        span: dict[spec.Aggregation, tuple[int, int]] = {}
        for agg, program in traced.items():
            offset = len(constants)
            span[agg] = (len(code), len(code) + len(program.code))
            code += [(op, d, a + offset if op == OP_CONST else a, b)
                     for op, d, a, b in program.code]  # fmt: skip
            constants += program.constants
        width = max((len(leaves) for *_, leaves in features), default=0)
        padded = [leaves + [(-1, 0, 0, 0)] * (width - len(leaves)) for *_, leaves in features]
        integer = [agg in _INTEGERS for _, _, agg, _ in features]
        return cls(
            [(i, j) for i, j, _, _ in features],
            np.array(code, dtype=np.int64).reshape(len(code), 4),
            np.array(constants, dtype=np.float64),
            np.array([span[agg] for _, _, agg, _ in features], dtype=np.int64).reshape(-1, 2),
            np.array(padded, dtype=np.int64).reshape(len(features), width, 4),
            np.array([traced[agg].root for _, _, agg, _ in features], dtype=np.int64),
            max((p.registers for p in traced.values()), default=0),
            np.flatnonzero(integer), np.flatnonzero(~np.array(integer, dtype=bool)),
        )  # fmt: skip


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


@dataclass
class LookupPlan:
    """A compiled lookup of several views' features (see the module docstring)."""

    records: list[Record]
    features: list[list[Feature]]
    tables: _Stacked
    laws: dict[str, tuple[int, int]]  # law -> its [start, end) of dense columns
    raw: dict[str, np.ndarray]  # raw part -> dense column per latest value
    program: _Program
    texts: _Texts
    distinct_sketches: np.ndarray  # per distinct feature: its sketch
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
        texts: list[tuple[int, int, int, int, int, list[int]]] = []
        distinct: list[tuple[int, int]] = []  # (sketch, window tiles) per distinct feature
        numeric: list[tuple[int, int, spec.Aggregation, list[tuple[int, ...]]]] = []
        traced: dict[spec.Aggregation, _Traced] = {}
        for i, ((_, _, record), wanted) in enumerate(zip(requests, features, strict=True)):
            for j, f in enumerate(wanted):
                key, tiles = (i, f.window.tile_ms, f.column), f.window.tiles
                if f.function == "last" and f.column in record.text_values:
                    earlier = record.texts[: record.texts.index(f.column)]
                    texts.append((i, j, latest[key], tiles, record.slots[(f.column, "last")],
                                  [record.slots[(n, "last")] for n in earlier]))  # fmt: skip
                    continue
                program = traced[f.function] = _traced(f.function)
                leaves = _leaves(program, key, tiles, column, latest, raw, len(distinct))
                if spec.SKETCH.name in program.leaves:
                    distinct.append((sketches[key], tiles))
                numeric.append((i, j, f.function, leaves))
        stacked = _Stacked.of(tables, len(ordered), len(latest))
        return cls(
            [r for _, _, r in requests], features, stacked, laws, raw,
            _Program.of(numeric, traced), _Texts.of(texts, stacked.zero),
            np.array([s for s, _ in distinct], dtype=np.int64),
            np.array([t for _, t in distinct], dtype=np.int64), len(sketches),
            len(ordered), requests[0][2].newest_slot if requests else 0,
        )  # fmt: skip

    def run(
        self, tiles: Sequence[Sequence[Sequence[bytes]]], at: int
    ) -> tuple[list[list[list[Any]]], list[list[bool]], list[list[int | None]]]:
        """Per request: its features' values for each entity row at ``at``, whether each
        row holds any record, and each row's newest event time. ``tiles[i][row]`` is
        request i's tile records of that row (every request has the same rows)."""
        return _Run(self, tiles, at).values()


def _leaves(  # noqa: PLR0917
    program: _Traced,
    key: tuple[int, int, str],
    tiles: int,
    column: dict[tuple[int, int, str, str, str], int],
    latest: dict[tuple[int, int, str], int],
    raw: dict[str, np.ndarray],
    distinct: int,
) -> list[tuple[int, ...]]:
    """How `kernels.finish` loads the leaves of a feature (request, granularity, value
    ``key``; a window of ``tiles``) finished by ``program``; a sketch's from row
    ``distinct`` of the distinct counts."""
    leaves: list[tuple[int, ...]] = []
    for p in program.leaves:
        if p == spec.SKETCH.name:
            leaves += [(LEAF_SIZE, distinct, 0, 0), (LEAF_KTH, distinct, 0, 0)]
        elif p in spec.LATEST:
            v = latest[key]
            leaves.append((LEAF_LATEST, int(raw[p][v]), v, tiles))
        else:
            leaves.append((LEAF_MERGED, column[(*key, p, _LAW[p])], tiles, int(p in _SUMS)))
    return leaves


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
        """Every feature's values as Python lists (NaN as None), per request."""
        from featurestore.features import kernels

        plan, program = self.plan, self.plan.program
        out: list[list[list[Any]]] = [[[] for _ in f] for f in plan.features]
        size, kth = self._distinct()
        finished = kernels.finish(
            program.code, program.constants, program.spans, program.leaves, program.roots,
            program.registers, self.dense, self.depth, self.held_age, self.held_any, size, kth,
        )  # fmt: skip
        outputs = program.outputs
        for i, column in zip(program.integers.tolist(),
                             finished[program.integers].astype(np.int64).tolist(),
                             strict=True):  # fmt: skip
            out[outputs[i][0]][outputs[i][1]] = column
        doubles = finished[program.doubles]
        nulls = np.isnan(doubles).any(axis=1).tolist()
        for i, column, null in zip(program.doubles.tolist(), doubles.tolist(), nulls,
                                   strict=True):  # fmt: skip
            out[outputs[i][0]][outputs[i][1]] = (
                [None if v != v else v for v in column] if null else column  # noqa: PLR0124
            )
        if plan.texts.outputs:
            for (i, j), column in zip(plan.texts.outputs, self._texts(), strict=True):
                out[i][j] = column
        return out, self.found, self.newest

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

    def _distinct(self) -> tuple[np.ndarray, np.ndarray]:
        """Per distinct feature and row, its sketch's size and K-th hash over its window
        (`kernels.distinct`): the leaves its finishing reads."""
        from featurestore.features import kernels

        plan, stack = self.plan, self.plan.tables
        try:
            return kernels.distinct(
                self.buffer, self.starts, self.matrix, self.where, self.ages, self.rows,
                self.view, self.n_rows, stack.sizes, stack.widths, stack.sketches,
                plan.n_sketches, plan.distinct_sketches, plan.distinct_tiles, K,
            )  # fmt: skip
        except ValueError as error:  # a record of another layout
            views = ", ".join(sorted({f"{r.view.name!r} v{r.view.version}" for r in plan.records}))
            raise ConfigError(
                f"{error} (views {views}): its view's values changed without a new version? "
                "bump `version` and backfill"
            ) from error


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

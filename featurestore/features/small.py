"""The small-read execution of the window engine: online lookups without Polars frames.

A lookup reads a few entities' tile records (`featurestore.online.layout.Record`) of a
few views and needs their window values at ONE request time. Polars' fixed cost per
call (0.3-1.5 ms a step) would dominate it, so this module runs the merge and finishing
laws of `featurestore.features.spec` on numpy arrays instead. A `LookupPlan` is compiled
once per request shape (views, features, text values); each lookup then costs a fixed
number of array operations, whatever the number of features, views or entity rows:

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
  seen; counts per age, accumulated, give every window's distinct count at once.

Tiles later than the request time's tile are ignored (they cannot exist online: their
events have not arrived yet); tiles older than a window are outside it, as in
`featurestore.features.windows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from featurestore.features import spec
from featurestore.features.definitions import Feature, FeatureView
from featurestore.features.sketch import HASH_BITS, SCALE, K

if TYPE_CHECKING:  # the online store's record format, which passes its Record in
    from featurestore.online.layout import Record

_LAWS = ("add", "min", "max", "raw")  # column order in the dense array
_RAW = ("count", *spec.LATEST)  # a latest value's columns, as stored (not accumulated)
_INTEGERS = frozenset({"count", "distinct"})
_LAW = {p.name: p.merge for p in spec.PARTS}
_SHIFT = np.uint64(HASH_BITS)  # sketch hashes are below 2**HASH_BITS
_PACKED_CELLS = 1 << 11  # (sketch, row) cells that fit above a hash in 64 bits


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
    tiles: np.ndarray
    windows: np.ndarray  # tiles as a column
    latest: np.ndarray
    columns: dict[str, np.ndarray]


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
        self.arrays = _FinishArrays(
            tiles, tiles[:, None], np.array(self.latest, dtype=np.int64),
            {p: np.array(c, dtype=np.int64) for p, c in self.columns.items()},
        )  # fmt: skip

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

    tiles_ms: np.ndarray
    depths: np.ndarray
    sources: np.ndarray  # (granularities, reads): slot in the record's fixed part
    targets: np.ndarray  # (granularities, reads): dense column (spare when padding)
    latest: np.ndarray  # (granularities, latest reads): latest value index (spare: -1)
    sketches: np.ndarray  # (granularities, sketched values): sketch index, or -1


@dataclass
class LookupPlan:
    """A compiled lookup of several views' features (see the module docstring)."""

    records: list[Record]
    features: list[list[Feature]]
    views: list[_ViewTable]
    laws: dict[str, tuple[int, int]]  # law -> its [start, end) of dense columns
    raw: dict[str, np.ndarray]  # raw part -> dense column per latest value
    finishes: dict[spec.Aggregation, _Finish]
    # per request, its text `last` features: (feature indices, latest values, window
    # tiles, text slots in the record)
    texts: dict[int, tuple[list[int], np.ndarray, np.ndarray, np.ndarray]]
    n_latest: int
    distinct: list[tuple[int, int]]  # (request, feature) of each distinct feature
    distinct_sketches: np.ndarray  # its sketch
    distinct_tiles: np.ndarray  # its window's tiles
    n_sketches: int
    n_columns: int

    @property
    def cells_per_row(self) -> int:
        """Dense cells one entity row can take (at the longest window's depth)."""
        depth = max((int(t.depths.max()) for t in self.views if len(t.depths)), default=1)
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
        texts: dict[int, list[tuple[int, int, int, int]]] = {}
        distinct: list[tuple[int, int, int, int]] = []
        for i, ((_, _, record), wanted) in enumerate(zip(requests, features, strict=True)):
            for j, f in enumerate(wanted):
                key = (i, f.window.tile_ms, f.column)
                if f.function == "distinct":
                    distinct.append((i, j, sketches[key], f.window.tiles))
                elif f.function == "last" and f.column in record.text_values:
                    slot = record.texts.index(f.column)
                    texts.setdefault(i, []).append((j, latest[key], f.window.tiles, slot))
                else:
                    finishes.setdefault(f.function, _Finish()).add(
                        (i, j), f, column, latest.get(key, -1)
                    )
        for finish in finishes.values():
            finish.freeze()
        return cls(
            [r for _, _, r in requests], features, tables, laws, raw, finishes,
            {i: _text_arrays(rows) for i, rows in texts.items()},
            len(latest), [(i, j) for i, j, _, _ in distinct],
            np.array([s for _, _, s, _ in distinct], dtype=np.int64),
            np.array([t for _, _, _, t in distinct], dtype=np.int64), len(sketches),
            len(ordered),
        )  # fmt: skip

    def run(
        self, replies: Sequence[tuple[Sequence[bytes], Sequence[int]]], n_rows: int, at: int
    ) -> tuple[list[list[list[Any]]], list[list[bool]], list[list[int | None]]]:
        """Per request: its features' values for rows ``0..n_rows-1`` at ``at``, whether
        each row holds any record, and each row's newest event time. ``replies[i]`` is
        request i's records and the row of each."""
        return _Run(self, replies, n_rows, at).values()


def _text_arrays(
    rows: list[tuple[int, int, int, int]],
) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """One request's text ``last`` features (feature, latest value, tiles, text slot)
    as (feature indices, and the other three as arrays)."""
    values, windows, slots = (np.array([r[k] for r in rows]) for k in (1, 2, 3))
    return [r[0] for r in rows], values, windows, slots


def _table(  # noqa: PLR0917
    i: int,
    view: FeatureView,
    record: Record,
    wanted: list[Feature],
    column: dict[tuple[int, int, str, str, str], int],
    latest: dict[tuple[int, int, str], int],
    sketches: dict[tuple[int, int, str], int],
) -> _ViewTable:
    """View ``i``'s scatter table (`_ViewTable`); padding goes to the spare column."""
    spare = len(column)
    tiles = sorted({f.window.tile_ms for f in wanted})
    depths = [max(f.window.tiles for f in wanted if f.window.tile_ms == g) for g in tiles]
    sources, targets, lasts, sketched = [], [], [], []
    for g in tiles:
        mine = [(r, c) for r, c in column.items() if r[0] == i and r[1] == g]
        sources.append([record.slots[(value, part)] for (_, _, value, part, _), _ in mine])
        targets.append([c for _, c in mine])
        lasts.append([n for (v, t, _), n in latest.items() if v == i and t == g])
        sketched.append([sketches.get((i, g, name), -1) for name in record.sketched])
    width = max((len(s) for s in sources), default=0)
    lasting = max((len(s) for s in lasts), default=0)
    return _ViewTable(
        np.array(tiles, dtype=np.float64),
        np.array(depths, dtype=np.float64),
        np.array([s + [0] * (width - len(s)) for s in sources], dtype=np.int64),
        np.array([t + [spare] * (width - len(t)) for t in targets], dtype=np.int64),
        np.array([s + [-1] * (lasting - len(s)) for s in lasts], dtype=np.int64),
        np.array(sketched, dtype=np.int64).reshape(len(tiles), len(record.sketched)),
    )


class _Run:
    """One lookup through a plan."""

    def __init__(
        self, plan: LookupPlan, replies: Sequence[tuple[Sequence[bytes], Sequence[int]]],
        n_rows: int, at: int,
    ) -> None:  # fmt: skip
        self.plan, self.n_rows, self.at = plan, n_rows, at
        self.found: list[list[bool]] = []
        self.newest: list[list[int | None]] = []
        self.records: list[Sequence[bytes]] = []
        self.matrices: list[np.ndarray] = []
        kept = []
        depth = 1
        for record, table, (records, rows) in zip(plan.records, plan.views, replies,
                                                  strict=True):  # fmt: skip
            matrix = record.matrix(records) if records else np.zeros((0, record.width))
            row_of = np.asarray(rows, dtype=np.int64)
            self.records.append(records)
            self.matrices.append(matrix)
            found = [False] * n_rows
            for row in rows:
                found[row] = True
            self.found.append(found)
            self.newest.append(_newest(record, matrix, rows, n_rows))
            if len(table.tiles_ms) == 1:
                where = np.zeros(len(matrix), dtype=np.int64)
            else:
                where = np.minimum(np.searchsorted(table.tiles_ms, matrix[:, 0]),
                                   len(table.tiles_ms) - 1)  # fmt: skip
            age = np.floor_divide(at, matrix[:, 0]) - matrix[:, 1]
            keep = np.flatnonzero((table.tiles_ms[where] == matrix[:, 0]) & (age >= 0)
                                  & (age < table.depths[where]))  # fmt: skip
            ages = age[keep].astype(np.int64)
            if len(ages):
                depth = max(depth, int(ages.max()) + 1)
            kept.append((keep, where[keep], ages, row_of[keep]))
        self.depth = depth
        self.kept = kept
        dense = np.empty((plan.n_columns + 1, n_rows, depth))
        dense[: plan.laws["add"][1]] = 0.0  # an absent tile adds nothing
        dense[plan.laws["add"][1] :] = np.nan  # and is null for everything else
        which = np.full((plan.n_latest + 1, n_rows, depth), -1, dtype=np.int64)
        for table, matrix, (keep, where, ages, kept_rows) in zip(plan.views, self.matrices,
                                                                 kept, strict=True):  # fmt: skip
            if not len(keep):
                continue
            at_row, at_age = kept_rows[:, None], ages[:, None]
            dense[table.targets[where], at_row, at_age] = matrix[keep[:, None],
                                                                 table.sources[where]]  # fmt: skip
            if table.latest.shape[1]:
                which[table.latest[where], at_row, at_age] = keep[:, None]
        for law, accumulate in (("add", np.cumsum), ("min", np.fmin.accumulate),
                                ("max", np.fmax.accumulate)):  # fmt: skip
            lo, hi = plan.laws[law]
            if hi > lo:
                dense[lo:hi] = accumulate(dense[lo:hi], axis=2)
        self.dense = dense
        self.held_age: np.ndarray | None = None
        self.held_any: np.ndarray | None = None
        if plan.n_latest:  # per latest value and row: the newest age holding a value
            held_tiles = dense[plan.raw["count"]] > 0
            self.held_age, self.held_any = held_tiles.argmax(axis=2), held_tiles.any(axis=2)
        self.which = which
        self.spans: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def values(self) -> tuple[list[list[list[Any]]], list[list[bool]], list[list[int | None]]]:
        plan = self.plan
        out: list[list[list[Any]]] = [[[] for _ in f] for f in plan.features]
        for agg, finish in plan.finishes.items():
            with np.errstate(invalid="ignore", divide="ignore"):
                values = spec.finish(agg, self._parts(finish), _NUMPY)
            integers = agg in _INTEGERS
            for (i, j), column in zip(finish.outputs, values.tolist(), strict=True):
                out[i][j] = ([int(v) for v in column] if integers
                             else [None if v != v else v for v in column])  # noqa: PLR0124  # fmt: skip
        for i, (outputs, values, tiles, slots) in plan.texts.items():
            for j, column in zip(outputs, self._texts(i, values, tiles, slots), strict=True):
                out[i][j] = column
        if plan.distinct:
            self._distinct(out)
        return out, self.found, self.newest

    def _parts(self, finish: _Finish) -> Any:
        arrays = finish.arrays
        assert arrays is not None
        tiles = np.minimum(arrays.tiles, self.depth) - 1

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
            merged: np.ndarray = self.dense[arrays.columns[p], :, tiles]
            return merged + 0.0 if p in ("sum", "sumsq") else merged  # a -0.0 fold is 0.0

        return part

    def _texts(
        self, request: int, values: np.ndarray, tiles: np.ndarray, slots: np.ndarray
    ) -> list[list[str | None]]:
        """The text ``last`` features of one request, all at once: latest values
        ``values`` over windows of ``tiles`` tiles, at text slots ``slots``."""
        record, records = self.plan.records[request], self.records[request]
        if not records:
            return [[None] * self.n_rows for _ in values]
        assert self.held_age is not None
        assert self.held_any is not None
        age = self.held_age[values]  # (features, rows)
        inside = (self.held_any[values] & (age < tiles[:, None])).tolist()
        chosen = self.which[values[:, None], np.arange(self.n_rows)[None, :], age]
        if request not in self.spans:
            self.spans[request] = record.text_spans(self.matrices[request])
        starts, lengths = self.spans[request]
        safe = np.maximum(chosen, 0)
        at_slot = slots[:, None]
        begins, sizes = starts[safe, at_slot].tolist(), lengths[safe, at_slot].tolist()
        out = []
        for picks in zip(chosen.tolist(), begins, sizes, inside, strict=True):
            out.append([record.text(records[r], b, n) if ok else None
                        for r, b, n, ok in zip(*picks, strict=True)])  # fmt: skip
        return out

    def _distinct(self, out: list[list[list[Any]]]) -> None:
        """Every distinct count at once: (sketch, row, hash) kept at its newest age."""
        plan, n_rows, depth = self.plan, self.n_rows, self.depth
        parts = []
        for record, table, records, matrix, (keep, where, ages, rows) in zip(
            plan.records, plan.views, self.records, self.matrices, self.kept, strict=True
        ):
            if not len(record.sketched) or not len(keep):
                continue
            sizes = record.sketch_sizes(matrix[keep])
            hashes = record.hashes([records[k] for k in keep.tolist()], sizes)
            per_record = np.repeat(np.arange(len(keep)), sizes.sum(axis=1))
            value = np.tile(np.arange(len(record.sketched)), len(keep))
            value_of = np.repeat(value, sizes.ravel())
            sketch = table.sketches[where[per_record], value_of]
            asked = sketch >= 0
            parts.append((sketch[asked], rows[per_record][asked], hashes[asked],
                          ages[per_record][asked]))  # fmt: skip
        if parts:
            sketch, row, hashes, age = (np.concatenate(c) for c in zip(*parts, strict=True))
        else:
            sketch = row = age = np.zeros(0, dtype=np.int64)
            hashes = np.zeros(0, dtype=np.uint64)
        # (sketch, row) as one cell number; hashes ascend within a cell after the sort.
        owner = sketch * n_rows + row
        if plan.n_sketches * n_rows <= _PACKED_CELLS:  # cell and hash in one 64-bit key
            key = (owner.astype(np.uint64) << _SHIFT) | hashes
            order = np.lexsort((age, key))
            key, owner, hashes, age = key[order], owner[order], hashes[order], age[order]
            first = np.ones(len(order), dtype=bool)
            np.not_equal(key[1:], key[:-1], out=first[1:])
        else:
            order = np.lexsort((age, hashes, owner))
            owner, hashes, age = owner[order], hashes[order], age[order]
            first = np.ones(len(order), dtype=bool)
            first[1:] = (owner[1:] != owner[:-1]) | (hashes[1:] != hashes[:-1])
        owner, hashes, age = owner[first], hashes[first], age[first]
        counts = np.bincount(owner * depth + age, minlength=plan.n_sketches * n_rows * depth)
        running = counts.reshape(plan.n_sketches, n_rows, depth).cumsum(axis=2)
        asked = plan.distinct_sketches
        tiles = np.minimum(plan.distinct_tiles, depth) - 1
        size = running[asked, :, tiles].astype(np.float64)  # (features, rows)
        kth = np.zeros_like(size)
        for f, r in zip(*np.nonzero(size >= K), strict=True):
            # Beyond K: the K-th smallest hash of the window (hashes ascend per cell).
            inside = (owner == asked[f] * n_rows + r) & (age <= tiles[f])
            kth[f, r] = float(hashes[inside][K - 1])
        values = _NUMPY.estimate((size, kth))
        for (i, j), column in zip(plan.distinct, values.tolist(), strict=True):
            out[i][j] = [int(v) for v in column]


def _newest(
    record: Record, matrix: np.ndarray, rows: Sequence[int], n_rows: int
) -> list[int | None]:
    """Per row, the newest event time of any of its values (None when none)."""
    newest: list[int | None] = [None] * n_rows
    if not len(matrix):
        return newest
    columns = [record.slots[(n, "last_time")] for n in record.names]
    for row, t in zip(rows, np.fmax.reduce(matrix[:, columns], axis=1).tolist(), strict=True):
        seen = newest[row]
        if t == t and (seen is None or t > seen):  # noqa: PLR0124 - NaN: no value
            newest[row] = int(t)
    return newest

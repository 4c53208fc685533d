"""Every aggregation specified once, as data: its partial parts, how parts merge, how a
merged partial is finished into a value. Both executions derive from this module: the
Polars engine (`featurestore.features.aggregates`: streaming writes, backfill,
point-in-time) and the frame-free small-read path (`featurestore.features.small`:
online lookups), and so does the stored record (`featurestore.online.layout`).

Parts of one value, in record order (`PARTS`), each with its merge law:

    count        add     non-null values                      (never null)
    sum          add     sum of values      (0.0 when count is 0; null if not numeric)
    sumsq        add     sum of squares     (0.0 when count is 0; null if not numeric)
    min          min     minimum            (null when count is 0 or not numeric)
    max          max     maximum            (null when count is 0 or not numeric)
    last         latest  value of the latest event (text for a text value)
    last_time    latest  its event time
    last_offset  latest  its source offset
    sketch       union   distinct-count sketch (only for a value with a distinct count)

Merge laws over a window's tiles:
- ``add``: a left fold from the NEWEST tile to the oldest, starting at 0.0. The order is
  part of the specification, so both executions add the same doubles in the same order
  and agree bit for bit (a sum in another association may differ in its last bits);
  newest first lets one running fold answer every window of a granularity at once, the
  shortest first. Counts are integers, exact in any order.
- ``min`` / ``max``: the smallest / largest non-null part (order-free).
- ``latest``: the three ``last*`` parts of the tile with the highest (last_time,
  last_offset); across tiles of one granularity that is the newest tile holding a value.
- ``union``: the `K` smallest distinct hashes of the union of the sketches.

Finishing (`finish`), from the merged parts; empty window: count, sum and distinct are
0, mean, min, max, std and last are null. std is the sample standard deviation
``sqrt(max((sumsq - sum*sum/n) / (n - 1), 0))``, null below 2 values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar, get_args

Aggregation = Literal["count", "sum", "mean", "min", "max", "std", "last", "distinct"]
AGGREGATIONS: tuple[Aggregation, ...] = get_args(Aggregation)
NUMERIC_ONLY: frozenset[Aggregation] = frozenset({"sum", "mean", "min", "max", "std"})

Merge = Literal["add", "min", "max", "latest", "union"]


@dataclass(frozen=True, slots=True)
class Part:
    """One partial part of a value: its name and merge law."""

    name: str
    merge: Merge
    integer: bool = False  # an Int64 in frames (a double in stored records)


PARTS: tuple[Part, ...] = (
    Part("count", "add", integer=True),
    Part("sum", "add"),
    Part("sumsq", "add"),
    Part("min", "min"),
    Part("max", "max"),
    Part("last", "latest"),
    Part("last_time", "latest", integer=True),
    Part("last_offset", "latest", integer=True),
)
SKETCH = Part("sketch", "union")
PART_NAMES: tuple[str, ...] = tuple(p.name for p in PARTS)
LATEST: tuple[str, ...] = tuple(p.name for p in PARTS if p.merge == "latest")

# The parts each aggregation reads.
NEEDS: dict[Aggregation, tuple[str, ...]] = {
    "count": ("count",),
    "sum": ("sum",),
    "mean": ("count", "sum"),
    "std": ("count", "sum", "sumsq"),
    "min": ("min",),
    "max": ("max",),
    "last": LATEST,
    "distinct": ("sketch",),
}


def kept(functions: Iterable[Aggregation]) -> tuple[Part, ...]:
    """The parts a stored partial of a value keeps for these aggregations, in `PARTS`
    order: its count always (whether a tile holds the value), then what each reads
    (`NEEDS`; the sketch is kept apart, for a value with a distinct count)."""
    wanted = {"count"} | {p for f in functions for p in NEEDS[f]}
    return tuple(p for p in PARTS if p.name in wanted)


X = TypeVar("X")  # a column of one execution: a Polars expression, or a traced symbol


class Ops(Protocol, Generic[X]):
    """What finishing needs from an execution, over its columns ``X``."""

    def count(self, n: X) -> X:
        """The count as an integer column, 0 where null."""
        ...

    def zero_if_null(self, x: X) -> X: ...

    def where(self, condition: X, x: X) -> X:
        """``x`` where ``condition`` holds, null elsewhere."""
        ...

    def at_least_zero(self, x: X) -> X: ...

    def sqrt(self, x: X) -> X: ...

    def as_float(self, x: X) -> X: ...

    def estimate(self, sketch: X) -> X:
        """Distinct-count estimate of a merged sketch (`featurestore.features.sketch`)."""
        ...


def finish(agg: Aggregation, part: Callable[[str], Any], ops: Ops[Any]) -> Any:
    """The value of ``agg`` from merged parts (``part(name)``, only those `NEEDS` names):
    the one formula both executions evaluate: on Polars expressions, or traced into the
    instructions the small-read path runs compiled (`featurestore.features.small`)."""
    if agg in ("min", "max"):
        return part(agg)
    if agg == "last":
        return part("last")
    if agg == "distinct":
        return ops.estimate(part("sketch"))
    if agg == "count":
        return ops.count(part("count"))
    s = ops.zero_if_null(part("sum"))
    if agg == "sum":
        return s
    nf = ops.as_float(ops.count(part("count")))
    if agg == "mean":
        return ops.where(nf > 0.0, s / nf)
    if agg == "std":
        q = ops.zero_if_null(part("sumsq"))
        variance = ops.at_least_zero((q - s * s / nf) / (nf - 1.0))
        return ops.where(nf >= 2.0, ops.sqrt(variance))
    raise ValueError(f"unknown aggregation {agg!r}; use one of {AGGREGATIONS}")

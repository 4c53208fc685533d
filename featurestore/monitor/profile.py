"""Distribution profiles and the statistics that compare them (pure).

A `Profile` summarises one feature or input field: for numbers, the bin edges (the
baseline's deciles, deduplicated, so each bin holds about a tenth of the baseline) and
the share of values in each bin; for text, the share of each of the most frequent
values (the rest pooled as ``__other__``); and the null rate either way. A current
window is profiled on the baseline's own bins (`Profile.on_bins`), so the two are
comparable bin by bin:

    PSI  = sum over bins of (c - b) * ln(c / b)       numbers; shares floored at 1e-4
    KS   = max over edges of |C(edge) - B(edge)|       numbers; the binned CDFs
    JS   = Jensen-Shannon divergence, base 2, in [0,1] text

Nulls are not part of the distributions; the null rate is compared on its own. A pii
field's profile (`Profile.withheld`) keeps no value of it: its top values would be the
values themselves, and its deciles can be.
Invariants: profiles are JSON-serialisable; statistics are symmetric where the
definitions are (KS, JS) and 0 for identical profiles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import polars as pl

BINS = 10
TOP = 20
OTHER = "__other__"
FLOOR = 1e-4  # PSI's share floor: an empty bin would make it infinite


@dataclass(frozen=True)
class Profile:
    kind: Literal["numeric", "categorical"]
    count: int  # values seen, nulls included
    null_rate: float
    edges: list[float] = field(default_factory=list)  # numeric: inner bin edges
    shares: list[float] = field(default_factory=list)  # numeric: len(edges) + 1 shares
    categories: dict[str, float] = field(default_factory=dict)  # categorical shares

    @classmethod
    def baseline(cls, values: pl.Series) -> Profile:
        """The profile that defines the bins: deciles for numbers, top values for text."""
        present = values.drop_nulls()
        null_rate = 1 - present.len() / values.len() if values.len() else 0.0
        if values.dtype.is_numeric() or values.dtype == pl.Boolean:
            numbers = present.cast(pl.Float64).filter(present.cast(pl.Float64).is_finite())
            qs = [numbers.quantile(i / BINS, "linear") for i in range(1, BINS)]
            qs = qs if numbers.len() else []
            edges = sorted({float(q) for q in qs if q is not None})
            return cls("numeric", values.len(), null_rate, edges, _shares(numbers, edges))
        counts = present.cast(pl.String).value_counts(sort=True, name="n")
        total = max(present.len(), 1)
        top = {str(v): n / total for v, n in counts.head(TOP).iter_rows()}
        rest = 1 - sum(top.values()) if present.len() else 0.0
        return cls("categorical", values.len(), null_rate,
                   categories={**top, **({OTHER: rest} if rest > 1e-12 else {})})  # fmt: skip

    @classmethod
    def withheld(cls, values: pl.Series) -> Profile:
        """The profile of a field whose values must not be kept (pii): its null rate,
        and every value in one bin (numbers) or pooled as ``__other__`` (text). Drift of
        its null rate is still seen; of its distribution, not."""
        present = values.drop_nulls()
        null_rate = 1 - present.len() / values.len() if values.len() else 0.0
        if values.dtype.is_numeric() or values.dtype == pl.Boolean:
            return cls("numeric", values.len(), null_rate, [], [1.0 if present.len() else 0.0])
        pooled = {OTHER: 1.0} if present.len() else {}
        return cls("categorical", values.len(), null_rate, categories=pooled)

    def on_bins(self, values: pl.Series) -> Profile:
        """``values`` profiled on this profile's bins or categories."""
        present = values.drop_nulls()
        null_rate = 1 - present.len() / values.len() if values.len() else 0.0
        if self.kind == "numeric":
            numbers = present.cast(pl.Float64)
            return Profile("numeric", values.len(), null_rate, self.edges,
                           _shares(numbers.filter(numbers.is_finite()), self.edges))  # fmt: skip
        known = set(self.categories) - {OTHER}
        text = present.cast(pl.String)
        total = max(text.len(), 1)
        counts = dict(text.value_counts(name="n").iter_rows())
        shares = {c: counts.get(c, 0) / total for c in known}
        other = sum(n for v, n in counts.items() if v not in known) / total
        if other or OTHER in self.categories:
            shares[OTHER] = other
        return Profile("categorical", values.len(), null_rate, categories=shares)

    def counts(self, values: pl.Series) -> tuple[list[float], int]:
        """``values`` counted on this profile's bins (or categories, in order), and
        their nulls: what rolling histograms add up (`from_counts` turns them back)."""
        present = values.drop_nulls()
        nulls = values.len() - present.len()
        if self.kind == "numeric":
            numbers = present.cast(pl.Float64)
            found = dict(bin_index(numbers.filter(numbers.is_finite()), self.edges)
                         .value_counts(name="n").iter_rows())  # fmt: skip
            return [float(found.get(i, 0)) for i in range(len(self.edges) + 1)], nulls
        names = list(self.categories)
        text = present.cast(pl.String)
        # Only the known categories leave Polars: a field may hold many distinct values.
        found = dict(text.filter(text.is_in(names)).value_counts(name="n").iter_rows())
        out = [float(found.get(n, 0)) for n in names]
        if OTHER in self.categories:
            out[names.index(OTHER)] = float(present.len() - sum(found.values()))
        return out, nulls

    @classmethod
    def from_counts(cls, baseline: Profile, counts: Sequence[float], nulls: int) -> Profile:
        """A profile from bin counts (numeric: per bin; categorical: per category of
        ``baseline``, in its order) accumulated elsewhere (the online histograms)."""
        seen = sum(counts)
        total = seen + nulls
        null_rate = nulls / total if total else 0.0
        shares = [c / seen if seen else 0.0 for c in counts]
        if baseline.kind == "numeric":
            return cls("numeric", int(total), null_rate, baseline.edges, shares)
        return cls("categorical", int(total), null_rate,
                   categories=dict(zip(baseline.categories, shares, strict=True)))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        return cls(**data)


def _shares(numbers: pl.Series, edges: list[float]) -> list[float]:
    if numbers.len() == 0:
        return [0.0] * (len(edges) + 1)
    bins = bin_index(numbers, edges)
    counts = bins.value_counts(name="n")
    found = dict(counts.iter_rows())
    return [found.get(i, 0) / numbers.len() for i in range(len(edges) + 1)]


def bin_index(numbers: pl.Series, edges: list[float]) -> pl.Series:
    """Each value's bin: 0 below the first edge, i for [edge i-1, edge i), the last bin
    at or above the last edge."""
    return pl.Series(edges, dtype=pl.Float64).search_sorted(numbers, side="right")


def psi(baseline: Profile, current: Profile) -> float:
    b, c = _paired(baseline, current)
    return sum((y - x) * math.log(y / x) for x, y in zip(b, c, strict=True))


def ks(baseline: Profile, current: Profile) -> float:
    b, c = _paired(baseline, current, floor=0.0)
    gap, cb, cc = 0.0, 0.0, 0.0
    for x, y in zip(b, c, strict=True):
        cb, cc = cb + x, cc + y
        gap = max(gap, abs(cc - cb))
    return gap


def js(baseline: Profile, current: Profile) -> float:
    b, c = _paired(baseline, current, floor=0.0)
    mid = [(x + y) / 2 for x, y in zip(b, c, strict=True)]

    def kl(p: list[float], q: list[float]) -> float:
        return sum(x * math.log2(x / y) for x, y in zip(p, q, strict=True) if x > 0)

    return (kl(b, mid) + kl(c, mid)) / 2


def _paired(
    baseline: Profile, current: Profile, floor: float = FLOOR
) -> tuple[list[float], list[float]]:
    if baseline.kind == "numeric":
        b, c = list(baseline.shares), list(current.shares)
    else:
        names = list(dict.fromkeys([*baseline.categories, *current.categories]))
        b = [baseline.categories.get(n, 0.0) for n in names]
        c = [current.categories.get(n, 0.0) for n in names]
    if floor:
        b, c = _floored(b, floor), _floored(c, floor)
    return b, c


def _floored(shares: list[float], floor: float) -> list[float]:
    raised = [max(s, floor) for s in shares]
    total = sum(raised)
    return [s / total for s in raised]

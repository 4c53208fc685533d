"""Counts over a sliding window of wall-clock time, in buckets (pure).

`RollingCounts` keeps, per key, the counts added in each of ``buckets`` slices of the
window; `totals` sums the slices still inside the window. Memory is bounded by keys x
buckets whatever the event rate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence


class RollingCounts:
    """Counts (scalars or fixed-length vectors) by key over the last ``window_ms``."""

    def __init__(self, window_ms: int, buckets: int = 10) -> None:
        self.window_ms = window_ms
        self.bucket_ms = max(1, window_ms // buckets)
        self._slices: dict[int, dict[Hashable, list[float]]] = {}

    def add(self, counts: Mapping[Hashable, float | Sequence[float]], now_ms: int) -> None:
        slice_ = self._slices.setdefault(now_ms // self.bucket_ms, defaultdict(list))
        for key, value in counts.items():
            vector = [float(value)] if isinstance(value, int | float) else [float(v) for v in value]
            held = slice_[key]
            if not held:
                held.extend(vector)
            else:
                for i, v in enumerate(vector):
                    held[i] += v
        self._drop(now_ms)

    def totals(self, now_ms: int) -> dict[Hashable, list[float]]:
        self._drop(now_ms)
        out: dict[Hashable, list[float]] = {}
        for slice_ in self._slices.values():
            for key, vector in slice_.items():
                held = out.setdefault(key, [0.0] * len(vector))
                for i, v in enumerate(vector):
                    held[i] += v
        return out

    def total(self, key: Hashable, now_ms: int) -> float:
        return self.totals(now_ms).get(key, [0.0])[0]

    def _drop(self, now_ms: int) -> None:
        oldest = (now_ms - self.window_ms) // self.bucket_ms
        for index in [i for i in self._slices if i <= oldest]:
            del self._slices[index]

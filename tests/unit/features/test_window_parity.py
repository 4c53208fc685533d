"""Property: merged tiles (online) == direct as-of (offline) == a plain-Python oracle."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.features import (
    AGGREGATIONS,
    Value,
    Window,
    as_of,
    merge_partials,
    tile_partials,
    window_values,
)

ALL = {"x": AGGREGATIONS}
VALUES = {"x": Value("x", distinct=True)}
ENTITY = ["user"]


@dataclass(frozen=True)
class Event:
    user: str
    time: int
    value: float
    offset: int


def frame(evs: list[Event]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user": [e.user for e in evs],
            "ts": [e.time for e in evs],
            "x": [e.value for e in evs],
            "offset": [e.offset for e in evs],
        },
        schema={"user": pl.String, "ts": pl.Int64, "x": pl.Float64, "offset": pl.Int64},
    )


def oracle(evs: list[Event], user: str, t: int, window: Window) -> dict[str, object]:
    g, w = window.tile_ms, window.length_ms
    start = (t // g) * g - w + g
    inside = [e for e in evs if e.user == user and start <= e.time <= t]
    values = [e.value for e in inside]
    n, s = len(values), sum(values)
    q = sum(v * v for v in values)
    std = None
    if n >= 2:
        std = math.sqrt(max((q - s * s / n) / (n - 1), 0.0))
        assert math.isclose(std, statistics.stdev(values), rel_tol=1e-9, abs_tol=1e-9)
    latest = max(inside, key=lambda e: (e.time, e.offset), default=None)
    return {
        "x__count": n,
        "x__sum": float(s),
        "x__mean": s / n if n else None,
        "x__min": min(values, default=None),
        "x__max": max(values, default=None),
        "x__std": std,
        "x__last": latest.value if latest else None,
        "x__distinct": len(set(values)),
    }


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Window, list[Event], list[tuple[str, int]], int]:
    tile = draw(st.sampled_from([1, 2, 3, 5]))
    window = Window(tile * draw(st.integers(1, 4)), tile)
    n = draw(st.integers(0, 25))
    offsets = draw(st.permutations(range(n)))
    evs = [
        Event(
            draw(st.sampled_from(["a", "b"])),
            draw(st.integers(-5, 40)),
            float(draw(st.integers(-50, 50))),
            offset,
        )
        for offset in offsets
    ]
    queries = draw(
        st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(-5, 45)), max_size=6)
    )
    split = draw(st.integers(0, n))
    return window, evs, queries, split


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_online_offline_and_oracle_agree(
    scenario: tuple[Window, list[Event], list[tuple[str, int]], int],
) -> None:
    window, evs, queries, split = scenario
    rows = pl.DataFrame(
        {"user": [u for u, _ in queries], "at": [t for _, t in queries]},
        schema={"user": pl.String, "at": pl.Int64},
    )
    offline = as_of(frame(evs), rows, ENTITY, "ts", window, aggs=ALL, at="at")
    assert offline["user"].to_list() == rows["user"].to_list()
    for i, (user, t) in enumerate(queries):
        # Online at t: only events with time <= t have arrived, in two batches.
        seen = [e for e in evs if e.time <= t]
        batches = [frame(seen[:split]), frame(seen[split:])]
        tiles = merge_partials(
            [tile_partials(b, ENTITY, "ts", VALUES, window.tile_ms) for b in batches],
            ENTITY,
        )
        online = window_values(
            tiles, ENTITY, t, window, ALL, rows=pl.DataFrame({"user": [user]})
        ).row(0, named=True)
        direct = offline.row(i, named=True)
        expected = oracle(evs, user, t, window)
        assert {k: online[k] for k in expected} == expected
        assert {k: direct[k] for k in expected} == expected

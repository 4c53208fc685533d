"""Tile partials, merging and window values: edges, empties, std, last and merge laws."""

from __future__ import annotations

import math

import polars as pl
import pytest

from featurestore.features import (
    AGGREGATIONS,
    Value,
    Window,
    as_of,
    merge_partials,
    tile_partials,
    window_values,
)

MINUTE = 60_000
ALL = {"x": AGGREGATIONS}
WINDOW = Window.parse("10m", "1m")


def events(*rows: tuple[str, int, float | None, int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user": [r[0] for r in rows],
            "ts": [r[1] for r in rows],
            "x": [r[2] for r in rows],
            "offset": [r[3] for r in rows],
        },
        schema={"user": pl.String, "ts": pl.Int64, "x": pl.Float64, "offset": pl.Int64},
    )


def partials(frame: pl.DataFrame, window: Window = WINDOW) -> pl.DataFrame:
    return tile_partials(frame, ["user"], "ts", {"x": Value("x", distinct=True)}, window.tile_ms)


def online(frame: pl.DataFrame, t: int, window: Window = WINDOW) -> dict[str, object]:
    """What an online read at t sees: only events with time <= t have arrived."""
    seen = frame.filter(pl.col("ts") <= t)
    rows = pl.DataFrame({"user": ["u"]})
    out = window_values(partials(seen, window), ["user"], t, window, ALL, rows=rows)
    return out.row(0, named=True)


def offline(frame: pl.DataFrame, t: int, window: Window = WINDOW) -> dict[str, object]:
    rows = pl.DataFrame({"user": ["u"], "at": [t]})
    return as_of(frame, rows, ["user"], "ts", window, aggs=ALL, at="at").row(0, named=True)


def both(frame: pl.DataFrame, t: int) -> dict[str, object]:
    on, off = online(frame, t), offline(frame, t)
    off.pop("at")
    assert on == off
    return on


T = 12 * 60 * MINUTE + 34 * MINUTE + 56_000  # 12:34:56 on the epoch day
START = 12 * 60 * MINUTE + 25 * MINUTE  # 12:25:00


@pytest.mark.parametrize(
    ("event_time", "counted"),
    [(START, True), (START - 1, False), (T, True), (T + 1, False)],
)
def test_window_edges(event_time: int, counted: bool) -> None:
    values = both(events(("u", event_time, 5.0, 1)), T)
    assert values["x__count"] == (1 if counted else 0)


def test_current_tile_after_t_is_excluded_offline() -> None:
    frame = events(("u", T, 1.0, 1), ("u", T + 1, 100.0, 2))
    assert offline(frame, T)["x__sum"] == 1.0


def test_empty_window() -> None:
    values = both(events(("u", START - MINUTE, 3.0, 1)), T)
    assert values == {
        "user": "u",
        "x__count": 0,
        "x__sum": 0.0,
        "x__mean": None,
        "x__min": None,
        "x__max": None,
        "x__std": None,
        "x__last": None,
        "x__distinct": 0,
    }


def test_entity_without_any_events_is_empty_not_dropped() -> None:
    rows = pl.DataFrame({"user": ["nobody", "u"], "at": [T, T]})
    out = as_of(events(("u", T, 2.0, 1)), rows, ["user"], "ts", WINDOW, aggs=ALL, at="at")
    assert out["user"].to_list() == ["nobody", "u"]
    assert out["x__count"].to_list() == [0, 1]


def test_std_with_one_and_two_events() -> None:
    one = both(events(("u", T - 1000, 4.0, 1)), T)
    assert one["x__std"] is None
    assert one["x__mean"] == 4.0
    two = both(events(("u", T - 1000, 4.0, 1), ("u", START, 6.0, 2)), T)
    assert two["x__std"] == pytest.approx(math.sqrt(2.0))
    assert (two["x__min"], two["x__max"], two["x__sum"]) == (4.0, 6.0, 10.0)


def test_last_is_latest_time_then_higher_offset() -> None:
    frame = events(
        ("u", T - 5, 1.0, 10),
        ("u", T - 1, 2.0, 7),
        ("u", T - 1, 3.0, 9),  # same time, higher offset: wins
        ("u", T - 1, 4.0, 8),
        ("u", START, 5.0, 99),  # higher offset but earlier time: loses
    )
    assert both(frame, T)["x__last"] == 3.0


def test_last_ties_across_tiles_and_batches() -> None:
    a = partials(events(("u", T - 1, 2.0, 7)))
    b = partials(events(("u", T - 1, 3.0, 9)))
    for merged in (merge_partials([a, b], ["user"]), merge_partials([b, a], ["user"])):
        assert merged["x__last"].to_list() == [3.0]
        assert merged["x__last_offset"].to_list() == [9]


def test_null_values_are_ignored() -> None:
    values = both(events(("u", T - 2, 2.0, 1), ("u", T - 1, None, 2)), T)
    assert (values["x__count"], values["x__last"]) == (1, 2.0)


def test_datetime_time_column() -> None:
    frame = events(("u", T - 1000, 2.0, 1), ("u", START - 1, 9.0, 2)).with_columns(
        pl.from_epoch("ts", time_unit="ms")
    )
    rows = pl.DataFrame({"user": ["u"], "at": [T]}).with_columns(pl.from_epoch("at", "ms"))
    out = as_of(frame, rows, ["user"], "ts", WINDOW, aggs={"x": ["sum"]}, at="at")
    assert out["x__sum"].to_list() == [2.0]


def _batches() -> list[pl.DataFrame]:
    return [
        partials(events(("u", 0, 1.0, 1), ("u", 61_000, 5.0, 2), ("v", 3, -2.0, 1))),
        partials(events(("u", 5, 7.0, 3), ("v", 3, 4.0, 0))),
        partials(events(("u", 61_000, -3.0, 4), ("u", 125_000, 2.0, 5))),
    ]


def test_merge_is_commutative_and_associative() -> None:
    a, b, c = _batches()
    key = ["user"]
    left = merge_partials([merge_partials([a, b], key), c], key)
    right = merge_partials([a, merge_partials([b, c], key)], key)
    swapped = merge_partials([c, b, a], key)
    assert left.equals(right)
    assert left.equals(swapped)


def test_merge_equals_partials_of_all_events() -> None:
    everything = events(
        ("u", 0, 1.0, 1), ("u", 61_000, 5.0, 2), ("v", 3, -2.0, 1),
        ("u", 5, 7.0, 3), ("v", 3, 4.0, 0),
        ("u", 61_000, -3.0, 4), ("u", 125_000, 2.0, 5),
    )  # fmt: skip
    assert merge_partials(_batches(), ["user"]).equals(partials(everything))


def test_online_read_decays_as_time_passes() -> None:
    p = partials(events(("u", 0, 1.0, 1)))
    read = [
        window_values(p, ["user"], t, WINDOW, {"x": ["count"]})["x__count"].item()
        for t in (0, 10 * MINUTE - 1, 10 * MINUTE)
    ]
    assert read == [1, 1, 0]

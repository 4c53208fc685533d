"""Tiles and window bounds: the DESIGN.md worked example and the exact edges."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from featurestore.errors import ConfigError, FeatureStoreError
from featurestore.features import Window, duration_ms, floor_to_tile, tile_index

MINUTE = 60_000


def ms(hour: int, minute: int, second: int = 0, millis: int = 0) -> int:
    moment = datetime(2024, 5, 1, hour, minute, second, millis * 1000, tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("10m", 10 * MINUTE), ("1h", 60 * MINUTE), ("24h", 1440 * MINUTE), ("7d", 7 * 1440 * MINUTE)],
)
def test_durations_parse(raw: str, expected: int) -> None:
    assert duration_ms(raw) == expected


def test_bad_duration_is_a_featurestore_error() -> None:
    with pytest.raises(FeatureStoreError):
        duration_ms("ten minutes")


@pytest.mark.parametrize(("length", "tile"), [(0, 1), (10, 0), (10, -5), (10, 3)])
def test_invalid_windows_are_rejected(length: int, tile: int) -> None:
    with pytest.raises(ConfigError):
        Window(length, tile)


def test_worked_example_from_design() -> None:
    window = Window.parse("10m", "1m")
    t = ms(12, 34, 56)
    assert list(window.tile_range(t)) == [ms(12, m) // MINUTE for m in range(25, 35)]
    assert window.start(t) == ms(12, 25)
    assert window.contains(t, ms(12, 25))
    assert window.contains(t, ms(12, 34, 56))
    assert not window.contains(t, ms(12, 24, 59, 999))
    assert not window.contains(t, ms(12, 34, 56, 1))


def test_tile_covers_half_open_interval() -> None:
    g = MINUTE
    k = tile_index(ms(12, 34), g)
    assert tile_index(ms(12, 34, 59, 999), g) == k
    assert tile_index(ms(12, 35), g) == k + 1
    assert floor_to_tile(ms(12, 34, 56), g) == ms(12, 34)


def test_floors_round_down_before_the_epoch() -> None:
    assert tile_index(-1, 10) == -1
    assert Window(20, 10).start(-1) == -20


def test_polars_expressions_match_python() -> None:
    window = Window(30, 10)
    times = [-11, -1, 0, 9, 10, 29, 30, 31]
    frame = pl.DataFrame({"t": times}).select(
        window.tile_expr(pl.col("t")).alias("tile"),
        window.first_tile_expr(pl.col("t")).alias("first"),
        window.start_expr(pl.col("t")).alias("start"),
    )
    assert frame["tile"].to_list() == [window.tile_of(t) for t in times]
    assert frame["first"].to_list() == [window.first_tile(t) for t in times]
    assert frame["start"].to_list() == [window.start(t) for t in times]

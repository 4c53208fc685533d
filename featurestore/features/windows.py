"""Durations, tiles and sliding windows: the time semantics of every feature value.

This module owns the one definition of "which events are in window W at time t".
Times are integers: milliseconds since the Unix epoch, UTC.

Tiles. A tile of granularity g (``tile_ms``) has index ``k = floor(t / g)`` for event
time t and covers the half-open interval ``[k*g, (k+1)*g)``. ``floor_g(t) = k*g`` is
the start of the tile containing t. Floors round toward minus infinity, so times
before the epoch work the same way.

Windows. A window of length W (``length_ms``) at time t merges the tile containing t
and the ``W/g - 1`` tiles before it, i.e. tiles ``k_t - W/g + 1 ... k_t`` with
``k_t = floor(t / g)``. Its events are exactly those with event time in the closed
interval::

    [floor_g(t) - W + g, t]

The window ends at t inclusive: an event in the current tile with time > t is NOT in
the window (online it has not arrived yet; offline it is filtered out).

Worked example (DESIGN.md): g = 1m, W = 10m, t = 12:34:56 -> tiles 12:25 ... 12:34,
i.e. event times in [12:25:00, 12:34:56]. An event at 12:24:59.999 is out; an event
at 12:34:56.000 is in, one at 12:34:56.001 is out.

Invariants of `Window`: ``tile_ms > 0``, ``length_ms > 0`` and ``tile_ms`` divides
``length_ms``, so every window is a whole number of tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from featurestore.contracts.contract import parse_duration_ms
from featurestore.errors import ConfigError


def duration_ms(raw: str | int, *, what: str = "duration") -> int:
    """Milliseconds of "10m", "1h", "24h", "7d", "250ms" or a whole number of ms."""
    parsed = parse_duration_ms(what, raw)
    if parsed is None:  # pragma: no cover - parse_duration_ms returns None only for None
        raise ConfigError(f"{what} is missing; write a duration such as '10m' or '1h'")
    return parsed


def tile_index(t: int, tile_ms: int) -> int:
    """Index k of the tile containing time t: floor(t / g)."""
    return t // tile_ms


def floor_to_tile(t: int, tile_ms: int) -> int:
    """floor_g(t): the start of the tile containing t."""
    return (t // tile_ms) * tile_ms


@dataclass(frozen=True, slots=True)
class Window:
    """A sliding look-back of ``length_ms`` made of tiles of ``tile_ms``."""

    length_ms: int
    tile_ms: int

    def __post_init__(self) -> None:
        if self.tile_ms <= 0 or self.length_ms <= 0:
            raise ConfigError(
                f"window length {self.length_ms} ms and tile {self.tile_ms} ms must both be "
                "greater than 0; use durations such as length '1h' with tile '1m'"
            )
        if self.length_ms % self.tile_ms:
            raise ConfigError(
                f"tile {self.tile_ms} ms does not divide window length {self.length_ms} ms; "
                "choose a tile that fits a whole number of times into the window"
            )

    @classmethod
    def parse(cls, length: str | int, tile: str | int) -> Window:
        """A window from durations such as ``Window.parse("1h", "1m")``."""
        return cls(duration_ms(length, what="window"), duration_ms(tile, what="tile"))

    @property
    def tiles(self) -> int:
        """Number of tiles in the window: W / g."""
        return self.length_ms // self.tile_ms

    def tile_of(self, t: int) -> int:
        """Index of the tile containing t."""
        return tile_index(t, self.tile_ms)

    def first_tile(self, t: int) -> int:
        """Index of the oldest tile in the window at t: floor(t/g) - W/g + 1."""
        return self.tile_of(t) - self.tiles + 1

    def tile_range(self, t: int) -> range:
        """Indices of the tiles merged for the window at t, oldest first."""
        return range(self.first_tile(t), self.tile_of(t) + 1)

    def start(self, t: int) -> int:
        """First event time in the window at t (inclusive): floor_g(t) - W + g."""
        return floor_to_tile(t, self.tile_ms) - self.length_ms + self.tile_ms

    def contains(self, t: int, event_time: int) -> bool:
        """Whether an event at ``event_time`` counts in the window at t."""
        return self.start(t) <= event_time <= t

    # Polars forms of the same arithmetic, for vectorised use.

    def tile_expr(self, t: pl.Expr) -> pl.Expr:
        """Tile index of an integer time expression."""
        return t.floordiv(self.tile_ms)

    def first_tile_expr(self, t: pl.Expr) -> pl.Expr:
        """Oldest tile index of the window at each time of ``t``."""
        return self.tile_expr(t) - (self.tiles - 1)

    def start_expr(self, t: pl.Expr) -> pl.Expr:
        """First event time of the window at each time of ``t`` (inclusive)."""
        return t.floordiv(self.tile_ms) * self.tile_ms - self.length_ms + self.tile_ms

"""Comparing feature frames the way the parity rules say: exact, except floats within
1e-9 relative (sums are associated differently online and offline)."""

from __future__ import annotations

import polars as pl
import pytest


def assert_close(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert got.columns == want.columns
    for name in got.columns:
        for a, b in zip(got[name].to_list(), want[name].to_list(), strict=True):
            if isinstance(a, float) and isinstance(b, float):
                assert a == pytest.approx(b, rel=1e-9, abs=1e-9), name
            else:
                assert a == b, name

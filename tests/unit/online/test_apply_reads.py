"""The apply's reads: each key's ``HMGET`` asks its write token, its offset marks and
its touched tiles once each, and every segment finds its own mark and stored tile in
the flattened replies (no Redis here: a reply echoes the fields asked)."""

from __future__ import annotations

from itertools import chain

import numpy as np
import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from featurestore.features.aggregates import SPAN_HI, SPAN_LO, TILE
from featurestore.online.layout import WRITE_TOKEN
from featurestore.online.store import _FIELD, _KEY, _OFIELD, _RECORD, _Segments

segment = st.tuples(st.integers(0, 3), st.sampled_from(["o:t:0", "o:t:1", "o:u:0"]),
                    st.integers(0, 5))  # fmt: skip


@given(st.lists(st.lists(segment, min_size=1, max_size=8), min_size=1, max_size=12))
def test_every_segment_finds_its_mark_and_tile_in_the_replies(
    keys: list[list[tuple[int, str, int]]],
) -> None:
    rows = [(f"k{k}", ofield, f"{g},{tile}", tile)
            for k, segments in enumerate(keys) for g, ofield, tile in segments]  # fmt: skip
    frame = pl.DataFrame(rows, schema=[_KEY, _OFIELD, _FIELD, TILE], orient="row")
    frame = frame.with_columns(
        pl.lit(0).alias(SPAN_LO), pl.lit(1).alias(SPAN_HI), pl.lit(b"r").alias(_RECORD)
    )
    read = _Segments(frame, pl.DataFrame()).read()
    assert read.keys == [f"k{k}" for k in range(len(keys))]
    for command, key, segments in zip(read.commands, read.keys, keys, strict=True):
        assert command[:3] == ("HMGET", key, WRITE_TOKEN)
        asked = command[3:]
        assert len(asked) == len(set(asked))
        wanted = {o for _, o, _ in segments} | {f"{g},{t}" for g, _, t in segments}
        assert set(asked) == wanted
    flat = list(chain.from_iterable(c[2:] for c in read.commands))  # replies echo fields
    assert [flat[b] for b in read.base.tolist()] == [WRITE_TOKEN] * len(keys)
    assert [flat[i] for i in read.mark_at.tolist()] == frame[_OFIELD].to_list()
    at = read.stored_at(np.arange(frame.height))
    assert [flat[i] for i in at.tolist()] == frame[_FIELD].to_list()

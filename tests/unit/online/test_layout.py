"""Records: engine partials -> record text -> partials again, exactly."""

from __future__ import annotations

import polars as pl

from featurestore.features.aggregates import tile_partials
from featurestore.features.definitions import FeatureView
from featurestore.online.layout import (
    ROW,
    SOURCE,
    TILE_MS,
    Source,
    decode_records,
    decode_sources,
    record_expr,
    record_width,
)

VIEW = FeatureView.model_validate(
    {
        "name": "v", "source": "s", "entity": "card", "owner": "o",
        "aggregations": [
            {"column": "amount", "functions": ["sum", "last"], "windows": ["1h"]},
            {"column": "country", "functions": ["last", "distinct"], "windows": ["1h"]},
        ],
    }
)  # fmt: skip


def test_records_round_trip_exactly() -> None:
    events = pl.DataFrame(
        {
            "card": ["a", "a", "b", "c"],
            "ts": [1_000, 2_000, 3_000, 4_000],
            "amount": [0.1, 1 / 3, 1e300, None],
            "country": ["DE", 'a,b\n"x"', None, "FR"],
            "offset": [1, 2, 3, 4],
        }
    )
    partials = tile_partials(events, ["card"], "ts", VIEW.values, 60_000)
    text = {"country"}
    lines = partials.select(
        pl.concat_str(
            pl.int_range(pl.len()).cast(pl.String), pl.lit("60000"),
            pl.col("tile").cast(pl.String), record_expr(VIEW, text), separator=",",
        )
    ).to_series()  # fmt: skip
    payload = "".join(f"{line}\n" for line in lines).encode()
    decoded = decode_records(payload, VIEW, text)
    assert decoded.get_column(TILE_MS).to_list() == [60_000] * 3
    again = decoded.drop(ROW, TILE_MS)
    assert again.columns == partials.drop("card").columns
    assert again.to_dicts() == partials.drop("card").to_dicts()


def test_no_tiles_is_an_empty_frame() -> None:
    assert decode_records(b"", VIEW, set()).height == 0


def test_several_views_lines_parse_as_one_frame_with_their_slots() -> None:
    other = FeatureView.model_validate(
        {"name": "w", "source": "s", "entity": "card", "owner": "o",
         "aggregations": [{"column": "amount", "functions": ["max"], "windows": ["1h"]}]}
    )  # fmt: skip
    events = pl.DataFrame(
        {"card": ["a", "b"], "ts": [1_000, 70_000], "amount": [2.5, 4.0],
         "country": ["DE", "FR"], "offset": [1, 2]}
    )  # fmt: skip
    text = {"country"}
    sources = [Source(VIEW, text, "s0."), Source(other, set(), "s1.")]
    widths = [record_width(VIEW), record_width(other)]
    lines: list[str] = []
    for i, source in enumerate(sources):
        parts = tile_partials(events, ["card"], "ts", source.view.values, 60_000)
        records = parts.select(record_expr(source.view, source.text_values)).to_series()
        before, after = "," * sum(widths[:i]), "," * sum(widths[i + 1 :])
        for row, tile, record in zip(parts["card"], parts["tile"], records, strict=True):
            lines.append(f"{ord(row) - 97},{i},60000,{tile},{before}{record}{after}\n")
    frame = decode_sources("".join(lines).encode(), sources)
    assert frame[SOURCE].to_list() == [0, 0, 1, 1]
    assert frame["s0.country__last"].to_list() == ["DE", "FR", None, None]
    assert frame["s0.country__sketch"].to_list()[2:] == [[], []]
    assert frame["s1.amount__max"].to_list() == [None, None, 2.5, 4.0]
    assert frame["s0.amount__sum"].to_list() == [2.5, 4.0, None, None]

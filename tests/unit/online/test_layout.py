"""Records: engine partials -> record text -> partials again, exactly."""

from __future__ import annotations

import polars as pl

from featurestore.features.aggregates import tile_partials
from featurestore.features.definitions import FeatureView
from featurestore.online.layout import ROW, TILE_MS, decode_records, record_expr

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

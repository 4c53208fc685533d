"""Records (format 3): engine partials -> binary records -> partials again, exactly, for
the parts a view's features read."""

from __future__ import annotations

import polars as pl
import pytest

from featurestore.errors import ConfigError
from featurestore.features.aggregates import tile_partials
from featurestore.features.definitions import FeatureView
from featurestore.online.layout import (
    FORMAT,
    MIN_RECORD_BYTES,
    ROW,
    TILE_MS,
    Record,
    check_format,
    entity_keys,
    entity_parts,
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
EVENTS = pl.DataFrame(
    {
        "card": ["a", "a", "b", "c"],
        "ts": [1_000, 2_000, 3_000, 4_000],
        "amount": [0.1, 1 / 3, 1e300, None],
        "country": ["DE", 'a,b\n"x"\x00é', None, "FR"],
        "offset": [1, 2, 3, 4],
    }
)


def test_records_round_trip_exactly() -> None:
    partials = tile_partials(EVENTS, ["card"], "ts", VIEW.values, 60_000)
    record = Record(VIEW, frozenset({"country"}))
    encoded = record.encode(partials, 60_000)
    assert all(len(r) >= MIN_RECORD_BYTES for r in encoded)
    decoded = record.frame(encoded, range(len(encoded)))
    assert decoded.get_column(TILE_MS).to_list() == [60_000] * 3
    again = decoded.drop(ROW, TILE_MS)
    assert again.columns == partials.drop("card").columns
    kept = record.kept_columns
    assert again.select(kept).to_dicts() == partials.select(kept).to_dicts()
    # What no feature reads is not stored: null when decoded.
    dropped = [c for c in again.columns if c not in kept]
    assert dropped == ["amount__sumsq", "amount__min", "amount__max", "country__sum",
                       "country__sumsq", "country__min", "country__max"]  # fmt: skip
    assert all(again.get_column(c).null_count() == again.height for c in dropped)


def test_a_record_keeps_what_its_features_read_and_the_newest_time() -> None:
    record = Record(VIEW, frozenset({"country"}))
    assert {n: [p.name for p in parts] for n, parts in record.parts.items()} == {
        "amount": ["count", "sum", "last", "last_time", "last_offset"],
        "country": ["count", "last", "last_time", "last_offset"],
    }
    assert record.sketched == ("country",)
    assert record.texts == ("country",)
    partials = tile_partials(EVENTS, ["card"], "ts", VIEW.values, 60_000)
    matrix = record.matrix(record.encode(partials, 60_000))
    # the newest event time of any value: card c's only event has a null amount
    assert matrix[:, record.newest_slot].tolist() == [2_000.0, 3_000.0, 4_000.0]


def test_a_numeric_view_has_fixed_width_records() -> None:
    numeric = FeatureView.model_validate(
        {"name": "w", "source": "s", "entity": "card", "owner": "o",
         "aggregations": [{"column": "amount", "functions": ["max"], "windows": ["1h"]}]}
    )  # fmt: skip
    record = Record(numeric, frozenset())
    partials = tile_partials(EVENTS, ["card"], "ts", numeric.values, 60_000)
    encoded = record.encode(partials, 60_000)
    assert record.fixed_only
    assert {len(r) for r in encoded} == {8 * record.width}
    assert record.matrix(encoded).shape == (3, record.width)


def test_no_tiles_is_an_empty_frame() -> None:
    assert Record(VIEW, frozenset()).frame([], []).height == 0


def test_a_record_of_another_layout_is_refused_with_the_fix() -> None:
    record = Record(VIEW, frozenset({"country"}))
    with pytest.raises(ConfigError, match="bump `version` and backfill"):
        record.matrix([b"\x00" * (MIN_RECORD_BYTES + 8)])


def test_data_of_an_older_format_names_the_fix() -> None:
    check_format(str(FORMAT).encode(), VIEW, "cannot read")
    with pytest.raises(ConfigError, match=r"format 1.*featurestore backfill v --version"):
        check_format(None, VIEW, "cannot read")


@pytest.mark.parametrize(
    ("columns", "keys"),
    [
        ({"card": ["a", None, "é"]}, ["card"]),
        ({"card": [1, None, -(2**63)]}, ["card"]),
        ({"card": pl.Series([1, 2, None], dtype=pl.UInt8)}, ["card"]),
        ({"a": ["x", "y", None], "b": [1, None, 3]}, ["a", "b"]),
        ({"card": [1.5, None, 2.0]}, ["card"]),
        ({"card": [True, None, False]}, ["card"]),
    ],
)
def test_entity_parts_equal_the_polars_form(columns: dict[str, object], keys: list[str]) -> None:
    frame = pl.DataFrame(columns)
    polars_form = frame.select(entity_keys(frame, keys).fill_null("\x00")).to_series().to_list()
    assert entity_parts(frame, keys) == polars_form

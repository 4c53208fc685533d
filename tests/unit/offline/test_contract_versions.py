"""The offline store across contract versions: files written under v1 and v2 of a
contract (a field added, a field dropped, an int promoted to long) read as one frame,
and training sets over both periods compute; a change Polars cannot widen safely (a
number become text) is refused with the column named."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from featurestore.errors import ConfigError
from featurestore.features.definitions import FeatureView
from featurestore.offline import EventWriter, check_readable, scan_events
from featurestore.offline.history import get_historical_features

T0 = 1_780_000_000_000 // 86_400_000 * 86_400_000  # midnight: v1 one day, v2 the next
DAY, MINUTE = 86_400_000, 60_000
SUBJECT = "rides-value"


def events(day: int, n: int, first_offset: int, **columns: pl.Series) -> pl.DataFrame:
    base = pl.DataFrame({
        "ride_id": [f"r{first_offset + i}" for i in range(n)],
        "driver": [f"d{i % 2}" for i in range(n)],
        "t": [T0 + day * DAY + i * MINUTE for i in range(n)],
        "_topic": ["rides"] * n, "_partition": pl.Series([0] * n, dtype=pl.Int32),
        "_offset": [first_offset + i for i in range(n)],
    })  # fmt: skip
    timed = base.with_columns(pl.from_epoch("t", time_unit="ms").dt.replace_time_zone("UTC"))
    return timed.with_columns(**columns)


@pytest.fixture
def root(tmp_path: Path) -> str:
    writer = EventWriter(str(tmp_path), SUBJECT, "t")
    v1 = events(0, 4, 0, passengers=pl.Series([1, 2, 1, 3], dtype=pl.Int32),
                note=pl.Series(["a", None, "b", "c"]))  # fmt: skip
    v2 = events(1, 3, 4, passengers=pl.Series([2, 5_000_000_000, 1], dtype=pl.Int64),
                tip=pl.Series([1.5, None, 2.0]))  # fmt: skip
    writer.write(v1)
    writer.write(v2)
    return str(tmp_path)


def test_files_of_two_contract_versions_read_as_one_frame(root: str) -> None:
    frame = scan_events(root, SUBJECT).collect().sort("_offset")
    assert frame.schema["passengers"] == pl.Int64  # promoted: int -> long
    assert frame["passengers"].to_list() == [1, 2, 1, 3, 2, 5_000_000_000, 1]
    assert frame["tip"].to_list() == [None] * 4 + [1.5, None, 2.0]  # added in v2
    assert frame["note"].to_list() == ["a", None, "b", "c"] + [None] * 3  # dropped in v2
    only = scan_events(root, SUBJECT, columns=["tip"]).collect()
    assert sorted(only.columns) == ["_offset", "_partition", "_topic", "tip"]
    first_day = scan_events(root, SUBJECT, event_time="t", between=(T0, T0 + DAY - 1)).collect()
    assert first_day["tip"].to_list() == [None] * 4  # v1's day alone still has the column


def test_a_training_set_over_both_versions_uses_a_field_added_later(root: str) -> None:
    view = FeatureView.model_validate({
        "name": "driver_tips", "source": SUBJECT, "entity": "driver", "owner": "o",
        "aggregations": [{"column": "tip", "functions": ["count", "sum"], "windows": ["2d/1h"]},
                         {"column": "passengers", "functions": ["max"], "windows": ["2d/1h"]}],
    })  # fmt: skip
    rows = pl.DataFrame({"driver": ["d0", "d0"], "event_timestamp": [T0 + DAY - 1, T0 + 2 * DAY]})
    got = get_historical_features(rows, [f"driver_tips:{f.name}" for f in view.features],
                                  views={view.name: view}, join_keys={"driver": ["driver"]},
                                  offline_root=root, event_time="t")  # fmt: skip
    # d0's rides: r0, r2 (v1, no tip field) and r4, r6 (v2, tips 1.5 and 2.0); the
    # second row's window starts an hour after v1's rides.
    assert got["tip_count_2d"].to_list() == [0, 2]
    assert got["tip_sum_2d"].to_list() == [0.0, 3.5]
    assert got["passengers_max_2d"].to_list() == [1.0, 2.0]


def test_a_type_change_that_would_turn_numbers_into_text_is_refused(tmp_path: Path) -> None:
    writer = EventWriter(str(tmp_path), SUBJECT, "t")
    writer.write(events(0, 2, 0, passengers=pl.Series([1, 2], dtype=pl.Int64)))
    writer.write(events(1, 2, 2, passengers=pl.Series(["one", "two"])))
    with pytest.raises(ConfigError, match=r"column 'passengers' is .*new name"):
        scan_events(str(tmp_path), SUBJECT)


def test_a_contract_the_store_could_not_read_with_its_files_is_refused(root: str) -> None:
    """At consumer start (`check_readable`): the decoded columns as a file would store
    them, against the files already stored."""
    base = {"ride_id": pl.String(), "driver": pl.String(), "t": pl.Datetime("us", "UTC")}
    fine = [{"passengers": pl.Int32()}, {"passengers": pl.Float64()}, {"seats": pl.String()}]
    for extra in fine:  # a promotion, or a field added
        check_readable(root, SUBJECT, pl.Schema({**base, **extra}), "contract version 3")
    with pytest.raises(
        ConfigError,
        match=r"'passengers' is Int\d+ in .*parquet and String in contract version 3.*new name",
    ):
        check_readable(root, SUBJECT, pl.Schema({**base, "passengers": pl.String()}),
                       "contract version 3")  # fmt: skip
    check_readable(str(Path(root) / "empty"), SUBJECT, pl.Schema(base), "v1")  # no files yet

"""Unit tests for featurestore.contracts.constraints: contract checks run on whole batches."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.contracts import Contract, FieldRules, compile_checks, parse_contract, split
from featurestore.contracts.constraints import find_violations, first_violations
from featurestore.contracts.violations import Reason, Rejection
from featurestore.errors import ContractError

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp()) * 1000
MINUTE, DAY = 60_000, 86_400_000
CARD_PAYMENT = parse_contract(
    (Path(__file__).parents[3] / "schemas" / "card_payment.v1.avsc").read_text()
)
Row = dict[str, Any]


def contract(*fields: dict[str, Any], **block: Any) -> Contract:
    """A record with an entity `id` (string) and event time `ts`, plus `fields`."""
    return parse_contract(
        {
            "type": "record",
            "name": "Event",
            "featurestore": {"entity": ["id"], "event_time": "ts", **block},
            "fields": [
                {"name": "id", "type": "string"},
                {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                *fields,
            ],
        }
    )


def dtype_of(rules: FieldRules) -> pl.DataType:
    if rules.logical_type in ("timestamp-millis", "timestamp-micros"):
        return pl.Datetime("ms" if rules.logical_type.endswith("millis") else "us", "UTC")
    return {
        "int": pl.Int32(),
        "long": pl.Int64(),
        "float": pl.Float32(),
        "double": pl.Float64(),
        "bytes": pl.Binary(),
        "boolean": pl.Boolean(),
    }.get(rules.avro_type, pl.String())


def frame_of(of: Contract, rows: list[Row]) -> pl.DataFrame:
    """The decoded batch of `rows` (timestamps given as integers in their unit).

    A row that leaves out `id` or `ts` gets the valid ones of `base_row`, and null for
    any other field; `_row` is 100 + 3 * i, so that positions and row ids differ.
    """
    columns = {}
    for name, rules in of.fields.items():
        values = [row.get(name, base_row().get(name)) for row in rows]
        dtype = dtype_of(rules)
        raw = pl.Int64 if isinstance(dtype, pl.Datetime) else dtype
        columns[name] = pl.Series(name, values, dtype=raw).cast(dtype)
    rows_ids = pl.Series("_row", [100 + 3 * i for i in range(len(rows))], dtype=pl.Int64)
    return pl.DataFrame([*columns.values(), rows_ids])


def base_row() -> Row:
    return {"id": "e1", "ts": NOW_MS - MINUTE}


def rejected(of: Contract, rows: list[Row], **kwargs: Any) -> list[Rejection]:
    frame = frame_of(of, rows)
    valid, rejections = split(frame, compile_checks(of), kwargs.pop("now", NOW), **kwargs)
    assert valid.height + len(rejections) == len(rows)
    return rejections


def rules_of(rejections: list[Rejection]) -> list[tuple[int, str | None, str | None]]:
    return [(r.row, r.field, r.rule) for r in rejections]


AMOUNT = {"name": "amount", "type": ["null", "double"], "constraints": {"min": 0, "max": 1e6}}


def test_min_and_max_are_inclusive() -> None:
    rows = [{"amount": v} for v in (-0.01, 0.0, 1e6, 1_000_000.01, -0.0)]
    found = rejected(contract(AMOUNT), rows)
    assert rules_of(found) == [(100, "amount", "min"), (109, "amount", "max")]
    assert found[0].reason is Reason.CONSTRAINT_VIOLATION
    assert found[0].message == "field 'amount': -0.01 is below min 0"
    assert found[1].message == "field 'amount': 1000000.01 is above max 1000000"


def test_integer_bounds_compare_whole_numbers_exactly() -> None:
    big = {"name": "n", "type": "long", "constraints": {"min": 0.5, "max": 2**53}}
    rows = [{"n": v} for v in (0, 1, 2**53, 2**53 + 1)]
    assert rules_of(rejected(contract(big), rows)) == [(100, "n", "min"), (109, "n", "max")]


def test_a_null_breaks_only_not_null() -> None:
    assert rejected(contract(AMOUNT), [{"amount": None}]) == []
    strict = {**AMOUNT, "constraints": {"min": 0, "not_null": True}}
    found = rejected(contract(strict), [{"amount": None}])
    assert rules_of(found) == [(100, "amount", "not_null")]
    assert found[0].message == "field 'amount': value is null, but the field is not_null"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("avro_type", ["double", "float", ["null", "float"]])
def test_nan_and_inf_are_never_valid_numbers(value: float, avro_type: Any) -> None:
    plain = {"name": "x", "type": avro_type}  # no constraints declared at all
    found = rejected(contract(plain), [{"x": value}, {"x": 1.5}])
    assert rules_of(found) == [(100, "x", "finite")]
    assert found[0].message == f"field 'x': {value!r} is not a finite number"


def test_min_and_max_on_their_own_do_not_flag_nan() -> None:
    # Polars orders NaN above every number (NaN > 1e6 is true); the checks must not.
    checks = {c.rule: c for c in compile_checks(contract(AMOUNT))}
    frame = pl.DataFrame({"amount": [math.nan, math.inf, -math.inf]})
    flags = frame.select(lo=checks["min"].violated, hi=checks["max"].violated)
    assert flags.to_dicts() == [
        {"lo": False, "hi": False},
        {"lo": False, "hi": True},
        {"lo": True, "hi": False},
    ]


def test_missing_entity_is_null_or_empty() -> None:
    rows: list[Row] = [{"id": ""}, {"id": None}, {"id": " "}, {"id": "e"}]
    found = rejected(contract(), rows)
    assert rules_of(found) == [(100, "id", "entity"), (103, "id", "entity")]
    assert {r.reason for r in found} == {Reason.MISSING_ENTITY}
    assert [r.message for r in found] == ["entity field 'id' is empty", "entity field 'id' is null"]


def test_one_of_for_strings_enums_and_numbers() -> None:
    channel = {"name": "ch", "type": {"type": "enum", "name": "Ch", "symbols": ["POS", "ATM"]}}
    of = contract(
        {"name": "cur", "type": "string", "constraints": {"one_of": ["EUR", "USD"]}},
        {**channel, "constraints": {"one_of": ["POS"]}},
        {"name": "mcc", "type": ["null", "int"], "constraints": {"one_of": [5411, 5812.0]}},
        {"name": "rate", "type": "float", "constraints": {"one_of": [0.1, 2]}},
    )
    fine = {"cur": "EUR", "ch": "POS", "mcc": 5812, "rate": 0.1}
    rows = [fine, {**fine, "cur": "eur"}, {**fine, "ch": "ATM"}, {**fine, "mcc": 1}]
    rows += [{**fine, "rate": 2.0}, {**fine, "rate": 0.2}, {**fine, "mcc": None}]
    found = rejected(of, rows)
    assert rules_of(found) == [
        (103, "cur", "one_of"),
        (106, "ch", "one_of"),
        (109, "mcc", "one_of"),
        (115, "rate", "one_of"),
    ]
    assert found[0].message == "field 'cur': 'eur' is not one of ['EUR', 'USD']"


def test_pattern_searches_like_json_schema() -> None:
    of = contract(
        {"name": "code", "type": "string", "constraints": {"pattern": "[0-9]"}},
        {"name": "cur", "type": "string", "constraints": {"pattern": "^[A-Z]{3}$"}},
    )
    fine = {"code": "ab1c", "cur": "EUR"}
    rows = [fine, {**fine, "code": "abc"}, {**fine, "cur": "eu"}, {**fine, "cur": "EUR\n"}]
    found = rejected(of, rows)
    # Rust's `$` is the end of the text: "EUR\n" fails, although Python's re.search passes it.
    assert re.search("^[A-Z]{3}$", "EUR\n")
    assert rules_of(found) == [
        (103, "code", "pattern"),
        (106, "cur", "pattern"),
        (109, "cur", "pattern"),
    ]
    assert found[1].message == "field 'cur': 'eu' does not match pattern ^[A-Z]{3}$"


def test_max_length_counts_characters_of_strings_and_bytes_of_bytes() -> None:
    of = contract(
        {"name": "s", "type": "string", "constraints": {"max_length": 3}},
        {"name": "b", "type": ["null", "bytes"], "constraints": {"max_length": 3}},
    )
    rows: list[Row] = [
        {"s": "€€€", "b": b"\x00\x01\x02"},
        {"s": "€€€€"},
        {"s": "", "b": "€".encode()},
    ]
    rows += [{"s": "abc", "b": b"abcd"}]
    found = rejected(of, rows)
    assert rules_of(found) == [(103, "s", "max_length"), (109, "b", "max_length")]
    assert found[0].message == "field 's': '€€€€' (4 characters) is longer than max_length 3"
    assert found[1].message == "field 'b': b'abcd' (4 bytes) is longer than max_length 3"


def test_future_events_use_the_skew_or_five_minutes() -> None:
    rows = [{"ts": NOW_MS + 5 * MINUTE}, {"ts": NOW_MS + 5 * MINUTE + 1}]
    found = rejected(contract(), rows)  # the contract sets no max_future_skew
    assert rules_of(found) == [(103, "ts", "future")]
    assert found[0].reason is Reason.FUTURE_EVENT
    far = int(datetime(2030, 1, 1, tzinfo=UTC).timestamp() * 1000)
    found = rejected(contract(max_future_skew="1m"), [{"ts": NOW_MS + MINUTE}, {"ts": far}])
    assert rules_of(found) == [(103, "ts", "future")]
    assert found[0].message == (
        "event time 2030-01-01T00:00:00Z is 3.1 years ahead of now; max_future_skew is 1m"
    )


def test_late_events_need_a_max_age_or_a_retention() -> None:
    rows = [{"ts": NOW_MS - 7 * DAY}, {"ts": NOW_MS - 7 * DAY - 1}, {"ts": NOW_MS - 3 * DAY}]
    assert rejected(contract(), rows) == []
    found = rejected(contract(max_age="7d"), rows)
    assert rules_of(found) == [(103, "ts", "late")]
    assert found[0].reason is Reason.LATE_EVENT
    assert found[0].message.endswith("is 7.0 days behind now; max_age is 7d")
    # With both, the tighter bound wins and the message names it.
    found = rejected(contract(max_age="7d"), rows, retention_ms=2 * DAY)
    assert [r.row for r in found] == [100, 103, 106]
    assert found[2].message == (
        "event time 2026-11-18T12:00:00Z is 3.0 days behind now; retention is 2d"
    )
    assert rules_of(rejected(contract(), rows, retention_ms=30 * DAY)) == []


def test_time_checks_follow_the_clock_given_and_micros() -> None:
    micros = {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}}
    of = parse_contract({"type": "record", "name": "E", "fields": [micros],
                         "featurestore": {"event_time": "ts", "max_age": "1h"}})  # fmt: skip
    frame = pl.DataFrame(
        {"ts": [NOW_MS * 1000 + 5 * MINUTE * 1000 + 1, NOW_MS * 1000], "_row": [0, 1]},
        schema={"ts": pl.Datetime("us", "UTC"), "_row": pl.Int64},
    )
    assert rules_of(find_violations(frame, compile_checks(of), NOW)) == [(0, "ts", "future")]
    an_hour_later = NOW_MS + 60 * MINUTE + 1  # epoch ms work as well as datetimes
    assert rules_of(find_violations(frame, compile_checks(of), an_hour_later)) == [
        (1, "ts", "late")
    ]
    with pytest.raises(ValueError, match="timezone-aware"):
        find_violations(frame, compile_checks(of), datetime(2026, 1, 1))


def test_far_future_times_beyond_python_datetimes_are_reported() -> None:
    found = rejected(contract(), [{"ts": 2**60}, {"ts": -(2**60)}], retention_ms=DAY)
    assert rules_of(found) == [(100, "ts", "future"), (103, "ts", "late")]
    assert found[0].message.startswith(f"event time {2**60} ms from the epoch is ")


def test_a_row_reports_the_first_check_it_breaks() -> None:
    of = contract(AMOUNT, {"name": "cur", "type": "string", "constraints": {"pattern": "^[A-Z]+$"}})
    rows: list[Row] = [
        {"id": "", "amount": -1.0, "ts": NOW_MS + DAY},
        {"amount": math.nan, "cur": "eu"},
        {"amount": -1.0, "cur": "eu", "ts": NOW_MS + DAY},
        {"cur": "eu", "ts": NOW_MS + DAY},
        {"cur": "EU", "ts": NOW_MS + DAY},
        {"cur": "EU"},
    ]
    expected = ["entity", "finite", "min", "pattern", "future"]
    assert [r.rule for r in rejected(of, rows)] == expected
    codes = first_violations(frame_of(of, rows), compile_checks(of), NOW).to_list()
    assert [compile_checks(of)[c].rule for c in codes[:5]] == expected
    assert codes[5] is None


def test_compile_checks_order() -> None:
    assert [(c.field, c.rule) for c in compile_checks(CARD_PAYMENT)] == [
        ("card_id", "entity"),
        ("ts", "not_null"),
        ("payment_id", "not_null"),
        ("payment_id", "max_length"),
        ("card_id", "pattern"),
        ("amount", "finite"),
        ("amount", "min"),
        ("amount", "max"),
        ("currency", "pattern"),
        ("merchant_id", "max_length"),
        ("merchant_category", "pattern"),
        ("country", "pattern"),
        ("ip_address", "max_length"),
        ("ts", "future"),
        ("ts", "late"),
    ]


def test_pii_values_never_appear_in_messages() -> None:
    secret = "203.0.113.77-" + "9" * 40
    of = contract(
        {"name": "ip", "type": ["null", "string"], "pii": True, "constraints": {"max_length": 45}},
        {"name": "tag", "type": "string", "pii": True, "constraints": {"pattern": "^[a-z]+$"}},
        {"name": "score", "type": "double", "pii": True, "constraints": {"max": 1}},
    )
    rows = [{"ip": secret, "tag": "a", "score": 0.0}, {"tag": secret, "score": 0.0}]
    rows += [{"tag": "a", "score": 12345.5}, {"tag": "a", "score": math.nan}]
    found = rejected(of, rows)
    assert [r.message for r in found] == [
        "field 'ip': value (pii, withheld) is longer than max_length 45",
        "field 'tag': value (pii, withheld) does not match pattern ^[a-z]+$",
        "field 'score': value (pii, withheld) is above max 1",
        "field 'score': value (pii, withheld) is not a finite number",
    ]


def test_long_values_are_cut_in_messages() -> None:
    of = contract({"name": "m", "type": "string", "constraints": {"max_length": 64}})
    (found,) = rejected(of, [{"m": "x" * 5000 + "\n"}])
    assert (
        found.message == f"field 'm': '{'x' * 76}... (5001 characters) is longer than max_length 64"
    )


def test_split_keeps_valid_rows_whole_and_in_order() -> None:
    rows = [{"id": "a"}, {"id": ""}, {"id": "c"}]
    frame = frame_of(contract(), rows)
    valid, found = split(frame, compile_checks(contract()), NOW)
    assert valid.columns == frame.columns
    assert valid["id"].to_list() == ["a", "c"]
    assert valid["_row"].to_list() == [100, 106]
    assert [r.row for r in found] == [103]
    empty, none = split(frame.head(0), compile_checks(contract()), NOW)
    assert (empty.height, none) == (0, [])
    plain = parse_contract(
        {"type": "record", "name": "P", "fields": [{"name": "s", "type": "string"}]}
    )
    assert compile_checks(plain) == ()
    assert split(frame, (), NOW)[0].height == 3


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [("^(?=card_)", "look-around"), (r"(a)\1", "backreferences"), ("^a{,3}$", "repetition")],
)
def test_registration_refuses_patterns_the_stream_cannot_run(pattern: str, problem: str) -> None:
    with pytest.raises(ContractError, match=r"field 'code'.*\(Rust regex\)") as caught:
        contract({"name": "code", "type": "string", "constraints": {"pattern": pattern}})
    assert problem in str(caught.value)
    assert caught.value.field == "code"


# --- property: every row ends in one place, for the rule a plain-Python oracle names ---------


def python_pattern(pattern: str) -> str:
    """The Python spelling of a Rust pattern whose only `$` is its last character."""
    assert "$" not in pattern[:-1]
    return pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern


def oracle(of: Contract, row: Row, now_ms: int, retention_ms: int | None) -> tuple[str, str] | None:
    """The first (field, rule) that `row` breaks, in plain Python, or None."""
    for name in of.entity:
        if row[name] in (None, "", b""):
            return name, "entity"
    assert of.event_time is not None
    if row[of.event_time] is None:
        return of.event_time, "not_null"
    for name, rules in of.fields.items():
        value, c = row[name], rules.constraints
        if value is None:
            if c.not_null and name not in (*of.entity, of.event_time):
                return name, "not_null"
            continue
        checks = [
            ("finite", rules.avro_type in ("float", "double") and not math.isfinite(value)),
            ("min", c.min is not None and value < c.min),
            ("max", c.max is not None and value > c.max),
            ("one_of", c.one_of is not None and value not in c.one_of),
            ("pattern", c.pattern is not None and not re.search(python_pattern(c.pattern), value)),
            ("max_length", c.max_length is not None and len(value) > c.max_length),
        ]
        for rule, broken in checks:
            if broken:
                return name, rule
    ts, skew = row[of.event_time], of.max_future_skew_ms or 5 * MINUTE
    if ts > now_ms + skew:
        return of.event_time, "future"
    ages = [a for a in (of.max_age_ms, retention_ms) if a is not None]
    if ages and ts < now_ms - min(ages):
        return of.event_time, "late"
    return None


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` nine times in ten, so that rows often get past their first fields."""
    return st.integers(0, 9).flatmap(lambda i: bad if i == 0 else good)


def texts(pattern: str) -> st.SearchStrategy[str | None]:
    tricky = st.sampled_from(["", " ", "\n", "EUR\n", "é", "€" * 3, "💳" * 50, "\x00"])
    huge = st.builds(lambda c, n: c * n, st.characters(codec="utf-8"), st.integers(40, 3000))
    bad = st.one_of(st.none(), st.text(max_size=12), tricky, huge)
    return mostly(st.from_regex(pattern, fullmatch=True), bad)


def payment_rows() -> st.SearchStrategy[Row]:
    skew, age = 5 * MINUTE, 7 * DAY
    edges = [NOW_MS + skew, NOW_MS + skew + 1, NOW_MS - age, NOW_MS - age - 1]
    amounts = [0.0, -0.0, 1e6, math.nextafter(1e6, math.inf), -1e-300, math.nan, -math.inf]
    return st.fixed_dictionaries(
        {
            "payment_id": texts(r"pay_[a-z0-9]{1,62}"),
            "card_id": texts(r"card_[0-9]{6}"),
            "amount": mostly(
                st.floats(0, 1e6),
                st.one_of(st.none(), st.floats(), st.sampled_from(amounts)),
            ),
            "currency": texts(r"[A-Z]{3}"),
            "merchant_id": texts(r"m_[0-9]{1,63}"),
            "merchant_category": texts(r"[0-9]{4}"),
            "country": texts(r"[A-Z]{2}"),
            "channel": st.sampled_from(["POS", "ONLINE", "ATM", "MOTO"]),
            "ip_address": st.one_of(st.none(), texts(r"[0-9a-f:.]{1,47}")),
            "ts": mostly(
                st.integers(NOW_MS - 8 * DAY, NOW_MS + DAY),
                st.one_of(st.none(), st.integers(-(2**55), 2**55), st.sampled_from(edges)),
            ),
        }
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(payment_rows(), max_size=40),
    retention_ms=st.sampled_from([None, DAY, 30 * DAY]),
)
def test_every_row_is_valid_or_rejected_once_for_the_rule_it_breaks(
    rows: list[Row], retention_ms: int | None
) -> None:
    frame = frame_of(CARD_PAYMENT, rows)
    valid, found = split(frame, compile_checks(CARD_PAYMENT), NOW, retention_ms)

    ids = sorted([*valid["_row"].to_list(), *(r.row for r in found)])
    assert ids == frame["_row"].to_list()
    for position, row in enumerate(rows):
        expected = oracle(CARD_PAYMENT, row, NOW_MS, retention_ms)
        rejection = next((r for r in found if r.row == 100 + 3 * position), None)
        got = None if rejection is None else (rejection.field, rejection.rule)
        assert got == expected, (row, rejection)
        if got == ("ip_address", "max_length"):
            assert rejection is not None
            assert rejection.message == (
                "field 'ip_address': value (pii, withheld) is longer than max_length 45"
            )

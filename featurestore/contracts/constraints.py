"""Contract constraints compiled to Polars expressions and run on a whole decoded batch.

This module owns the validator's fast path. `compile_checks` turns a `Contract` into an
ordered tuple of `Check`s, each a Boolean Polars expression that is true where a row
breaks one rule; `split` evaluates every check in one query over a decoded batch and
returns the valid rows and one `Rejection` per bad row. Python runs per row only to
write the message of a rejected row.

The decoded batch has one column per top-level field, typed as the decoder types it
(int Int32, long Int64, float Float32, double Float64, string and enum String, bytes
Binary, timestamps UTC Datetime, date Date; nullable unions hold nulls), plus the Int64
column `_row`: the event's position in the Kafka batch. `_fs_now` and `_fs_retention`
are reserved: they bind the `Clock` of one evaluation.

Invariants:
- every input row ends in exactly one place: the valid frame, or one `Rejection` whose
  `row` is its `_row` value (valid + rejected == input);
- a row is rejected for the FIRST check it breaks, in `compile_checks` order: entity
  fields (null or empty -> MISSING_ENTITY), event time null, then per field in schema
  order not_null, finite, min, max, one_of, pattern, max_length; then FUTURE_EVENT and
  LATE_EVENT;
- a null breaks only not_null and entity checks; NaN and +-inf in a float or double
  field always break "finite", declared or not; min and max are inclusive and never
  flag NaN (Polars orders NaN above every number: `NaN > max` is true there);
- pattern is a search in Rust regex syntax, where `$` is the end of the text, not also
  "before a final newline" as in Python `re`; max_length counts the characters of a
  string and the bytes of bytes;
- a message names the field, the rule and the value, cut to 80 characters; it never
  holds the value of a PII field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeAlias

import polars as pl

from featurestore.contracts.contract import Contract, FieldRules, Scalar
from featurestore.contracts.violations import Reason, Rejection

ROW_COLUMN: Final = "_row"
NOW_COLUMN: Final = "_fs_now"
RETENTION_COLUMN: Final = "_fs_retention"
DEFAULT_MAX_FUTURE_SKEW_MS: Final = 5 * 60_000
VALUE_CHARS: Final = 80
WITHHELD: Final = "value (pii, withheld)"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_FLOATS: Final = frozenset({"float", "double"})
_INTEGRAL: Final = frozenset({"int", "long"})
EpochUnit: TypeAlias = Literal["ms", "us", "d"]
_EPOCH_UNIT: Final[dict[str, EpochUnit]] = {
    "timestamp-millis": "ms",
    "timestamp-micros": "us",
    "local-timestamp-millis": "ms",
    "local-timestamp-micros": "us",
    "date": "d",
}
_UNITS_MS: Final = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000))
_SPANS: Final = (("years", 365.25 * 86_400_000), ("days", 86_400_000), ("hours", 3_600_000),
                  ("minutes", 60_000), ("seconds", 1_000))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Clock:
    """What the time checks of one evaluation compare against.

    `now_ms` is epoch milliseconds; `retention_ms`, when given, bounds the age of events
    as the contract's max_age does (with both, the tighter bound wins).
    """

    now_ms: int
    retention_ms: int | None = None

    def late_bound(self, max_age_ms: int | None) -> tuple[int, str] | None:
        """The age limit in force and its name ("max_age" wins ties), or None for none."""
        limits = (max_age_ms, "max_age"), (self.retention_ms, "retention")
        known = [(ms, name) for ms, name in limits if ms is not None]
        return min(known) if known else None


# (the offending value, or None when not fetched; the clock) -> the message.
Describe: TypeAlias = Callable[[Any, Clock], str]


@dataclass(frozen=True, slots=True, eq=False)  # eq=False: Expr.__eq__ builds an Expr
class Check:
    """One rule of a contract, as Polars expressions.

    `violated` is a Boolean expression, never null, true where a row breaks the rule; it
    may refer to NOW_COLUMN and RETENTION_COLUMN, which `split` binds. `value` selects
    what `describe` is given for a broken row (the field's value; temporal fields in epoch
    units); it is None when the message must not or need not show a value (PII fields,
    null checks), and then `describe` is given None.
    """

    field: str | None
    rule: str
    reason: Reason
    violated: pl.Expr
    describe: Describe
    value: pl.Expr | None = None


def compile_checks(contract: Contract) -> tuple[Check, ...]:
    """The contract's checks, in the order that decides which one a bad row reports.

    FUTURE_EVENT uses the contract's max_future_skew (5 minutes when unset). LATE_EVENT
    fires only when the contract sets max_age or the evaluation is given a retention
    (see `Clock`); with both, the tighter bound wins.
    """
    checks = [_entity_check(contract.fields[name]) for name in contract.entity]
    covered = set(contract.entity)
    if contract.event_time is not None:
        checks.append(_not_null_check(contract.fields[contract.event_time]))
        covered.add(contract.event_time)
    for rules in contract.fields.values():
        checks.extend(_field_checks(rules, with_not_null=rules.name not in covered))
    if contract.event_time is not None:
        checks.extend(_time_checks(contract, contract.fields[contract.event_time]))
    return tuple(checks)


def first_violations(
    frame: pl.DataFrame,
    checks: Sequence[Check],
    now: datetime | int,
    retention_ms: int | None = None,
) -> pl.Series:
    """Per row of `frame`, the index in `checks` of the first check it breaks, null if none.

    All checks run in one query. `now` (an aware datetime, or epoch ms) and
    `retention_ms` are the `Clock` of the time checks.
    """
    if not checks:
        return pl.repeat(None, frame.height, dtype=pl.UInt32, eager=True).alias("check")
    first = pl.coalesce(
        [pl.when(c.violated).then(pl.lit(i, pl.UInt32)) for i, c in enumerate(checks)]
    )
    return (
        frame.lazy()
        .with_columns(
            pl.lit(epoch_ms(now), pl.Int64).alias(NOW_COLUMN),
            pl.lit(retention_ms, pl.Int64).alias(RETENTION_COLUMN),
        )
        .select(first.alias("check"))
        .collect()
        .to_series()
    )


def split(
    frame: pl.DataFrame,
    checks: Sequence[Check],
    now: datetime | int,
    retention_ms: int | None = None,
) -> tuple[pl.DataFrame, list[Rejection]]:
    """The valid rows of `frame` (all columns, input order) and a rejection per bad row."""
    first = first_violations(frame, checks, now, retention_ms)
    bad = first.is_not_null()
    if not bad.any():
        return frame, []
    rejections = _rejections(
        frame.filter(bad), first.filter(bad), checks, Clock(epoch_ms(now), retention_ms)
    )
    return frame.filter(~bad), rejections


def find_violations(
    frame: pl.DataFrame,
    checks: Sequence[Check],
    now: datetime | int,
    retention_ms: int | None = None,
) -> list[Rejection]:
    """One rejection per bad row of `frame`, in row order; `split` also gives the rest."""
    return split(frame, checks, now, retention_ms)[1]


def epoch_ms(now: datetime | int) -> int:
    """`now` as whole milliseconds since the Unix epoch; a datetime must be aware."""
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("now must be a timezone-aware datetime (or epoch milliseconds)")
        return (now - _EPOCH) // timedelta(milliseconds=1)
    return now


def _rejections(
    bad: pl.DataFrame, codes: pl.Series, checks: Sequence[Check], clock: Clock
) -> list[Rejection]:
    """Messages for the bad rows only: each shown value is fetched once per check."""
    code_list: list[int] = codes.to_list()
    shown = {i: value for i in set(code_list) if (value := checks[i].value) is not None}
    values = bad.select(pl.col(ROW_COLUMN), *(v.alias(f"v{i}") for i, v in shown.items()))
    columns = {i: values.get_column(f"v{i}").to_list() for i in shown}
    rows: list[int] = values.get_column(ROW_COLUMN).to_list()
    rejections = []
    for position, (row, code) in enumerate(zip(rows, code_list, strict=True)):
        check = checks[code]
        value = columns[code][position] if code in columns else None
        message = check.describe(value, clock)
        rejections.append(Rejection(row, check.reason, message, check.field, check.rule))
    return rejections


# --- one function per rule: the expression and its message side by side ---------------


def _field_checks(rules: FieldRules, *, with_not_null: bool) -> Iterator[Check]:
    c = rules.constraints
    if c.not_null and with_not_null:
        yield _not_null_check(rules)
    if _is_float(rules):
        yield _finite_check(rules)
    if c.min is not None:
        yield _bound_check(rules, "min", c.min)
    if c.max is not None:
        yield _bound_check(rules, "max", c.max)
    if c.one_of is not None:
        yield _one_of_check(rules, c.one_of)
    if c.pattern is not None:
        yield _pattern_check(rules, c.pattern)
    if c.max_length is not None:
        yield _max_length_check(rules, c.max_length)


def _entity_check(rules: FieldRules) -> Check:
    column = pl.col(rules.name)
    if "string" in _branches(rules):
        empty = column.str.len_bytes() == 0
    elif "bytes" in _branches(rules):
        empty = column.bin.size() == 0
    else:
        empty = pl.lit(False)

    def describe(is_null: bool, _: Clock) -> str:
        return f"entity field '{rules.name}' is {'null' if is_null else 'empty'}"

    violated = (column.is_null() | empty).fill_null(True)
    return Check(rules.name, "entity", Reason.MISSING_ENTITY, violated, describe, column.is_null())


def _not_null_check(rules: FieldRules) -> Check:
    def describe(_: object, __: Clock) -> str:
        return f"{_subject(rules)}: value is null, but the field is not_null"

    violated = pl.col(rules.name).is_null()
    return Check(rules.name, "not_null", Reason.CONSTRAINT_VIOLATION, violated, describe)


def _finite_check(rules: FieldRules) -> Check:
    numbers = _numbers(rules)

    def describe(value: object, _: Clock) -> str:
        return f"{_subject(rules)}: {_shown(rules, value)} is not a finite number"

    violated = (~numbers.is_finite()).fill_null(False)
    return _constraint(rules, "finite", violated, describe, numbers)


def _bound_check(rules: FieldRules, rule: str, bound: float) -> Check:
    numbers = _numbers(rules)
    exact: float = bound
    if _is_integral(rules) and abs(bound) < 2**62:  # compare whole numbers exactly
        exact = math.ceil(bound) if rule == "min" else math.floor(bound)
    broken = numbers < exact if rule == "min" else numbers > exact
    if _is_float(rules):
        broken = broken & numbers.is_not_nan()
    side = "below" if rule == "min" else "above"

    def describe(value: object, _: Clock) -> str:
        return f"{_subject(rules)}: {_shown(rules, value)} is {side} {rule} {_number(bound)}"

    return _constraint(rules, rule, broken.fill_null(False), describe, numbers)


def _one_of_check(rules: FieldRules, allowed: tuple[Scalar, ...]) -> Check:
    column = pl.col(rules.name)
    if all(isinstance(v, str) for v in allowed):
        values = pl.Series(allowed, dtype=pl.String)
    elif _is_integral(rules):
        column = _numbers(rules).cast(pl.Int64)
        whole = [w for w in map(int, allowed) if -(2**63) <= w < 2**63]  # others never match
        values = pl.Series(whole, dtype=pl.Int64)
    else:  # compared in the column's own precision, so a float field matches 0.1 as 0.1f
        dtype = pl.Float32 if rules.avro_type == "float" else pl.Float64
        column = _numbers(rules).cast(dtype)
        values = pl.Series([float(v) for v in allowed], dtype=dtype)
    listed = _quote(list(allowed))

    def describe(value: object, _: Clock) -> str:
        return f"{_subject(rules)}: {_shown(rules, value)} is not one of {listed}"

    violated = (~column.is_in(values.implode())).fill_null(False)
    return _constraint(rules, "one_of", violated, describe, column)


def _pattern_check(rules: FieldRules, pattern: str) -> Check:
    column = pl.col(rules.name)

    def describe(value: object, _: Clock) -> str:
        return f"{_subject(rules)}: {_shown(rules, value)} does not match pattern {pattern}"

    violated = (~column.str.contains(pattern)).fill_null(False)
    return _constraint(rules, "pattern", violated, describe, column)


def _max_length_check(rules: FieldRules, limit: int) -> Check:
    column = pl.col(rules.name)
    strings = "string" in _branches(rules)
    length = column.str.len_chars() if strings else column.bin.size()
    unit = "characters" if strings else "bytes"

    def describe(value: Any, _: Clock) -> str:
        shown = WITHHELD if rules.pii else f"{_quote(value)} ({len(value)} {unit})"
        return f"{_subject(rules)}: {shown} is longer than max_length {limit}"

    return _constraint(rules, "max_length", (length > limit).fill_null(False), describe, column)


def _time_checks(contract: Contract, rules: FieldRules) -> Iterator[Check]:
    unit: EpochUnit = "us" if rules.logical_type == "timestamp-micros" else "ms"
    per_ms = 1000 if unit == "us" else 1
    event = pl.col(rules.name).dt.epoch(unit)
    now = pl.col(NOW_COLUMN) * per_ms
    shown = None if rules.pii else event
    skew = contract.max_future_skew_ms
    skew = DEFAULT_MAX_FUTURE_SKEW_MS if skew is None else skew
    max_age = contract.max_age_ms

    def at(value: int | None) -> str:
        return f"event time {WITHHELD}" if value is None else f"event time {_instant(value, unit)}"

    def ahead(value: int | None, clock: Clock) -> str:
        span = "" if value is None else f" {_span(value / per_ms - clock.now_ms)}"
        return f"{at(value)} is{span} ahead of now; max_future_skew is {_duration(skew)}"

    def behind(value: int | None, clock: Clock) -> str:
        age, name = clock.late_bound(max_age) or (0, "max_age")
        span = "" if value is None else f" {_span(clock.now_ms - value / per_ms)}"
        return f"{at(value)} is{span} behind now; {name} is {_duration(age)}"

    future = (event > now + skew * per_ms).fill_null(False)
    yield Check(rules.name, "future", Reason.FUTURE_EVENT, future, ahead, shown)
    # min_horizontal skips nulls: no max_age and no retention -> null -> never late.
    age = pl.min_horizontal(pl.lit(max_age, pl.Int64), pl.col(RETENTION_COLUMN))
    late = (event < now - age * per_ms).fill_null(False)
    yield Check(rules.name, "late", Reason.LATE_EVENT, late, behind, shown)


# --- column views and message text -----------------------------------------------------


def _constraint(
    rules: FieldRules, rule: str, violated: pl.Expr, describe: Describe, value: pl.Expr
) -> Check:
    shown = None if rules.pii else value
    return Check(rules.name, rule, Reason.CONSTRAINT_VIOLATION, violated, describe, shown)


def _branches(rules: FieldRules) -> frozenset[str]:
    return frozenset(rules.avro_type.split("|"))


def _is_float(rules: FieldRules) -> bool:
    return bool(_branches(rules) & _FLOATS) and _branches(rules) <= _FLOATS | _INTEGRAL


def _is_integral(rules: FieldRules) -> bool:
    return _branches(rules) <= _INTEGRAL


def _numbers(rules: FieldRules) -> pl.Expr:
    """The field as numbers: temporal fields in their epoch units, unions widened."""
    column = pl.col(rules.name)
    unit = _EPOCH_UNIT.get(rules.logical_type or "")
    if unit is not None:
        return column.dt.epoch(unit)
    if len(_branches(rules)) == 1:
        return column
    return column.cast(pl.Int64 if _is_integral(rules) else pl.Float64)


def _subject(rules: FieldRules) -> str:
    return f"field '{rules.name}'"


def _shown(rules: FieldRules, value: object) -> str:
    return WITHHELD if rules.pii else _quote(value)


def _quote(value: object) -> str:
    """`value` as Python writes it (quoted, control characters escaped), cut if long."""
    text = repr(value)
    return text if len(text) <= VALUE_CHARS else f"{text[: VALUE_CHARS - 3]}..."


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _instant(value: int, unit: str) -> str:
    try:
        moment = _EPOCH + timedelta(**{"milliseconds" if unit == "ms" else "microseconds": value})
    except OverflowError:
        return f"{value} {unit} from the epoch"
    spec = "seconds" if moment.microsecond == 0 else "milliseconds" if unit == "ms" else "auto"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def _span(ms: float) -> str:
    for name, size in _SPANS:
        if ms >= size:
            return f"{ms / size:.1f} {name}"
    return f"{ms:.0f} ms"


def _duration(ms: int) -> str:
    """Milliseconds written as the contract writes durations: "5m", "7d", "250ms"."""
    for suffix, size in _UNITS_MS:
        if ms and ms % size == 0:
            return f"{ms // size}{suffix}"
    return f"{ms}ms"

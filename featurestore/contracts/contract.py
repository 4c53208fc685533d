"""Contracts: the metadata that travels inside an Avro record schema.

A contract is an Avro record schema plus extra attributes, which Avro permits on records
and fields and ignores when it reads data: on the record ``"featurestore": {"entity":
["card_id"], "event_time": "ts", "owner": "...", "max_future_skew": "5m", "max_age": "7d"}``;
on a field ``"constraints": {"not_null": true, "min": 0, "max": 1e6, "one_of": [...],
"pattern": "^[A-Z]{3}$", "max_length": 64}`` and ``"pii": true``.

This module owns parsing that metadata into a frozen `Contract`; it does no I/O. A
`Contract` returned by `parse_contract` holds these invariants:

- the schema parses with fastavro (which decodes our events) and with the ``avro``
  package (whose checker decides compatibility): no schema passes one and fails the other;
- every entity field and the event-time field is a top-level, non-nullable field; the
  event-time field is a ``long`` with logical type timestamp-millis or timestamp-micros;
- every constraint fits its field's type: min/max on numbers, pattern on strings (it
  compiles with Python ``re`` and with the Rust regex that checks the stream),
  max_length on strings and bytes, one_of values of the field's type (enum symbols for
  enums), not_null a bool; min <= max; no unknown keys;
- durations are whole milliseconds >= 0, written ``"250ms"``, ``"30s"``, ``"5m"``,
  ``"1h"``, ``"7d"`` or as an integer of milliseconds.

A nullable field is a union containing ``"null"``; constraints look at its other branches.
Only top-level fields carry constraints and ``pii``: on fields of nested records they are
ignored for now. A schema without a ``featurestore`` block is a plain schema: no entity,
no event time, but its field constraints are still checked. A schema whose top level is
not a record has no field rules and may not carry a ``featurestore`` block.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final, TypeAlias, TypeGuard

import avro.errors
import avro.schema
import fastavro
import polars as pl

from featurestore.errors import ContractError

Scalar: TypeAlias = str | int | float

CONTRACT_KEYS: Final = ("entity", "event_time", "owner", "max_future_skew", "max_age")
CONSTRAINT_KEYS: Final = ("not_null", "min", "max", "one_of", "pattern", "max_length")
EVENT_TIME_LOGICAL_TYPES: Final = frozenset({"timestamp-millis", "timestamp-micros"})

_NUMERIC: Final = frozenset({"int", "long", "float", "double"})
_INTEGRAL: Final = frozenset({"int", "long"})
_DURATION: Final = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT_MS: Final = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


@dataclass(frozen=True, slots=True)
class Constraints:
    """The checks one field's values must pass; None (or False) means "no check"."""

    not_null: bool = False
    min: float | None = None
    max: float | None = None
    one_of: tuple[Scalar, ...] | None = None
    pattern: str | None = None
    max_length: int | None = None


@dataclass(frozen=True, slots=True)
class FieldRules:
    """What the contract says about one top-level field.

    `avro_type` names the non-null branches joined by "|" ("double", "string|int"), or
    "null"; `logical_type` is set only when the field has one non-null branch whose
    logical type Avro recognises.
    """

    name: str
    avro_type: str
    logical_type: str | None
    nullable: bool
    constraints: Constraints = Constraints()
    pii: bool = False


def _no_fields() -> Mapping[str, FieldRules]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Contract:
    """A parsed, validated contract. `fields` holds every top-level field, in order."""

    entity: tuple[str, ...] = ()
    event_time: str | None = None
    owner: str | None = None
    max_future_skew_ms: int | None = None
    max_age_ms: int | None = None
    fields: Mapping[str, FieldRules] = field(default_factory=_no_fields, hash=False)

    @property
    def pii_fields(self) -> frozenset[str]:
        """Names of the fields marked ``"pii": true``: never log or report their values."""
        return frozenset(name for name, rules in self.fields.items() if rules.pii)


def parse_contract(schema: str | Mapping[str, Any]) -> Contract:
    """Parse an Avro schema (JSON text or object) and validate its contract metadata.

    Raises ContractError naming the field at fault when the schema or metadata is invalid.
    """
    return contract_from_schema(parse_avro_schema(schema))


def parse_avro_schema(schema: str | Mapping[str, Any]) -> avro.schema.Schema:
    """Check `schema` with fastavro and the avro package; return the avro package's parse."""
    if isinstance(schema, str):
        text = schema
    else:
        try:
            text = json.dumps(schema)
        except (TypeError, ValueError) as exc:
            raise ContractError(
                f"the schema cannot be written as JSON ({exc}); fix it to hold only JSON values"
            ) from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContractError(
            f"the schema is not valid JSON ({exc}); fix the JSON text of the schema"
        ) from exc
    try:
        fastavro.parse_schema(document)
    except Exception as exc:  # fastavro raises many unrelated types for bad input
        raise ContractError(
            f"not a valid Avro schema (fastavro: {exc}); fix the schema as the Avro "
            "specification describes"
        ) from exc
    with warnings.catch_warnings():
        # Unknown logical types are ignored, as the specification says; no need to warn.
        warnings.simplefilter("ignore", avro.errors.IgnoredLogicalType)
        try:
            return avro.schema.parse(text)
        except Exception as exc:  # the avro package is as varied as fastavro
            raise ContractError(
                f"not a valid Avro schema (avro: {exc}); fix the schema as the Avro "
                "specification describes"
            ) from exc


def contract_from_schema(schema: avro.schema.Schema) -> Contract:
    """Validate the contract metadata of an already parsed schema (see the module doc)."""
    block = schema.get_prop("featurestore")
    if not isinstance(schema, avro.schema.RecordSchema):
        if block is not None:
            raise ContractError(
                f"a 'featurestore' block needs a record schema, but this schema is a "
                f"{schema.type}; wrap the value in a record or remove the block"
            )
        return Contract()
    fields = {str(f.name): _field_rules(f) for f in schema.fields}
    if block is None:
        return Contract(fields=MappingProxyType(fields))
    if not isinstance(block, Mapping):
        raise ContractError(
            "the 'featurestore' block must be an object like "
            '{"entity": ["card_id"], "event_time": "ts"}; fix the schema'
        )
    unknown = sorted(set(block) - set(CONTRACT_KEYS))
    if unknown:
        raise ContractError(
            f"unknown key(s) {', '.join(unknown)} in the 'featurestore' block; "
            f"use only {', '.join(CONTRACT_KEYS)}"
        )
    owner = block.get("owner")
    if owner is not None and not isinstance(owner, str):
        raise ContractError("featurestore.owner must be a string such as a team's e-mail")
    return Contract(
        entity=_entity(block.get("entity"), fields),
        event_time=_event_time(block.get("event_time"), fields),
        owner=owner,
        max_future_skew_ms=parse_duration_ms("max_future_skew", block.get("max_future_skew")),
        max_age_ms=parse_duration_ms("max_age", block.get("max_age")),
        fields=MappingProxyType(fields),
    )


def _entity(raw: object, fields: Mapping[str, FieldRules]) -> tuple[str, ...]:
    if raw is None:
        return ()
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ContractError(
            "featurestore.entity must be a field name or a non-empty list of field names"
        )
    if len(set(names)) != len(names):
        raise ContractError("featurestore.entity names a field twice; list each field once")
    for name in names:
        rules = _top_level_field(name, "entity", fields)
        if rules.nullable:
            raise ContractError(
                f"entity field '{name}' is nullable ({_describe_type(rules)}); an entity key "
                "must always be present: make the field non-nullable",
                field=name,
            )
    return tuple(names)


def _event_time(raw: object, fields: Mapping[str, FieldRules]) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ContractError("featurestore.event_time must be the name of a field")
    rules = _top_level_field(raw, "event_time", fields)
    if rules.nullable:
        raise ContractError(
            f"event_time field '{raw}' is nullable; every event needs an event time: "
            "make the field non-nullable",
            field=raw,
        )
    if rules.avro_type != "long" or rules.logical_type not in EVENT_TIME_LOGICAL_TYPES:
        raise ContractError(
            f"event_time field '{raw}' is {_describe_type(rules)}; make its type "
            '{"type": "long", "logicalType": "timestamp-millis"} (or timestamp-micros)',
            field=raw,
        )
    return raw


def _top_level_field(name: str, role: str, fields: Mapping[str, FieldRules]) -> FieldRules:
    rules = fields.get(name)
    if rules is None:
        raise ContractError(
            f"{role} field '{name}' is not a top-level field of the record (fields: "
            f"{', '.join(fields)}); add the field or fix featurestore.{role}",
            field=name,
        )
    return rules


def parse_duration_ms(key: str, raw: object) -> int | None:
    """Milliseconds of a duration such as "30s", "5m", "1h", "7d", "250ms", or an int."""
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    if isinstance(raw, str) and (match := _DURATION.fullmatch(raw.strip())):
        return int(match.group(1)) * _UNIT_MS[match.group(2)]
    raise ContractError(
        f'featurestore.{key} is {raw!r}; write a duration such as "30s", "5m", "1h", '
        '"7d" or "250ms", or a whole number of milliseconds >= 0'
    )


def _field_rules(avro_field: avro.schema.Field) -> FieldRules:
    name = str(avro_field.name)
    schema: avro.schema.Schema = avro_field.type
    branches: Sequence[avro.schema.Schema] = (
        schema.schemas if isinstance(schema, avro.schema.UnionSchema) else [schema]
    )
    non_null = [b for b in branches if b.type != "null"]
    logical_type = None
    if len(non_null) == 1 and isinstance(non_null[0], avro.schema.LogicalSchema):
        logical_type = str(non_null[0].get_prop("logicalType"))
    rules = FieldRules(
        name=name,
        avro_type="|".join(str(b.type) for b in non_null) or "null",
        logical_type=logical_type,
        nullable=len(non_null) < len(branches),
    )
    pii = avro_field.get_prop("pii")
    if pii is not None and not isinstance(pii, bool):
        raise _field_error(rules, f"'pii' is {pii!r}; write true or false")
    constraints = _constraints(rules, avro_field.get_prop("constraints"), non_null)
    return replace(rules, constraints=constraints, pii=bool(pii))


def _constraints(
    rules: FieldRules, raw: object, branches: Sequence[avro.schema.Schema]
) -> Constraints:
    if raw is None:
        return Constraints()
    if not isinstance(raw, Mapping):
        raise _field_error(rules, "'constraints' must be an object such as {\"min\": 0}")
    unknown = sorted(set(raw) - set(CONSTRAINT_KEYS))
    if unknown:
        raise _field_error(
            rules,
            f"unknown constraint(s) {', '.join(map(repr, unknown))}; "
            f"use only {', '.join(CONSTRAINT_KEYS)}",
        )
    kinds = frozenset(_kind(b) for b in branches)
    not_null = raw.get("not_null", False)
    if not isinstance(not_null, bool):
        raise _field_error(rules, "constraint 'not_null' must be true or false")
    low = _bound(rules, kinds, "min", raw.get("min"))
    high = _bound(rules, kinds, "max", raw.get("max"))
    if low is not None and high is not None and low > high:
        raise _field_error(
            rules, f"min {low} is greater than max {high}, so no value can pass; fix them"
        )
    return Constraints(
        not_null=not_null,
        min=low,
        max=high,
        one_of=_one_of(rules, kinds, branches, raw.get("one_of")),
        pattern=_pattern(rules, kinds, raw.get("pattern")),
        max_length=_max_length(rules, kinds, raw.get("max_length")),
    )


def _kind(branch: avro.schema.Schema) -> str:
    kind = str(branch.type)
    return "number" if kind in _NUMERIC else kind


def _field_error(rules: FieldRules, problem: str) -> ContractError:
    return ContractError(f"field '{rules.name}': {problem}", field=rules.name)


def _misfit(rules: FieldRules, key: str, applies_to: str) -> ContractError:
    return _field_error(
        rules,
        f"constraint '{key}' applies to {applies_to}, but the field is {rules.avro_type}; "
        "remove it or change the field type",
    )


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _bound(rules: FieldRules, kinds: frozenset[str], key: str, raw: object) -> float | None:
    if raw is None:
        return None
    if kinds != {"number"}:
        raise _misfit(rules, key, "numbers (int, long, float, double)")
    if not _is_number(raw):
        raise _field_error(rules, f"constraint '{key}' is {raw!r}; write a finite number")
    return raw


def _one_of(
    rules: FieldRules,
    kinds: frozenset[str],
    branches: Sequence[avro.schema.Schema],
    raw: object,
) -> tuple[Scalar, ...] | None:
    if raw is None:
        return None
    if kinds not in ({"string"}, {"enum"}, {"number"}):
        raise _misfit(rules, "one_of", "strings, enums and numbers")
    if not isinstance(raw, list) or not raw:
        raise _field_error(rules, "constraint 'one_of' must be a non-empty list of values")
    if kinds == {"enum"}:
        symbols = {s for b in branches if isinstance(b, avro.schema.EnumSchema) for s in b.symbols}
        unknown = [v for v in raw if v not in symbols]
        if unknown:
            raise _field_error(
                rules,
                f"one_of value(s) {unknown!r} are not symbols of the enum "
                f"({', '.join(sorted(symbols))}); use enum symbols only",
            )
    elif kinds == {"string"}:
        if not all(isinstance(v, str) for v in raw):
            raise _field_error(rules, f"one_of values {raw!r} must all be strings")
    else:
        integral = all(str(b.type) in _INTEGRAL for b in branches)
        for value in raw:
            if not _is_number(value) or (integral and not float(value).is_integer()):
                wanted = "whole numbers" if integral else "numbers"
                raise _field_error(
                    rules,
                    f"one_of value {value!r} can never match the {rules.avro_type} field; "
                    f"use {wanted} only",
                )
    return tuple(raw)


def _pattern(rules: FieldRules, kinds: frozenset[str], raw: object) -> str | None:
    if raw is None:
        return None
    if kinds != {"string"}:
        raise _misfit(rules, "pattern", "strings")
    if not isinstance(raw, str):
        raise _field_error(rules, "constraint 'pattern' must be a regular expression string")
    try:
        re.compile(raw)
    except re.error as exc:
        raise _field_error(
            rules, f"pattern {raw!r} does not compile ({exc}); fix the regular expression"
        ) from exc
    if (problem := _stream_regex_problem(raw)) is not None:
        raise _field_error(
            rules,
            f"pattern {raw!r} uses syntax the stream validator (Rust regex) does not support "
            f"({problem}); rewrite it without look-around, backreferences or Python-only syntax",
        )
    return raw


def _stream_regex_problem(pattern: str) -> str | None:
    """Why Polars' Rust regex, which checks patterns on the stream, refuses `pattern`."""
    try:
        pl.select(pl.lit("").str.contains(pattern))
    except pl.exceptions.PolarsError as exc:
        text = str(exc).split("\n\nThis error occurred")[0]
        return " ".join(text.rpartition("error: ")[2].split())
    return None


def _max_length(rules: FieldRules, kinds: frozenset[str], raw: object) -> int | None:
    if raw is None:
        return None
    if not kinds or not kinds <= {"string", "bytes"}:
        raise _misfit(rules, "max_length", "strings and bytes")
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise _field_error(rules, f"constraint 'max_length' is {raw!r}; write a whole number >= 0")
    return raw


def _describe_type(rules: FieldRules) -> str:
    kind = f"{rules.avro_type} ({rules.logical_type})" if rules.logical_type else rules.avro_type
    return f"null|{kind}" if rules.nullable else kind

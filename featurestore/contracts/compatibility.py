"""Schema evolution: may a new schema version follow the registered ones of a subject?

`check_compatibility(new, existing, level)` takes `existing` as (version, schema) pairs
ordered oldest to newest and returns the reasons `new` is incompatible; an empty list
means compatible. Every reason starts "incompatible with version N (...)".

Levels use Confluent's names. A non-transitive level checks `new` against the newest
existing version only; a ``_TRANSITIVE`` level against every existing version. NONE
accepts anything (the new schema must still be a valid contract).

Two parts are checked, in both cases for every version the level selects:

Avro data. BACKWARD: the new schema, as reader, can read data written with the old one.
FORWARD: the old schema, as reader, can read data written with the new one. FULL: both.
The verdict is the Apache Avro project's ``ReaderWriterCompatibilityChecker``; this module
only turns its results into sentences. We never write our own resolution rules.

Contract metadata. BACKWARD means the new contract accepts every event the old one
accepted; FORWARD means the old contract accepts every event the new one accepts. So:

- tightened (breaks BACKWARD, BACKWARD_TRANSITIVE, FULL, FULL_TRANSITIVE): min raised or
  added, max lowered or added, one_of values removed or one_of added, not_null added (or
  the field made non-nullable), max_length lowered or added, pattern added;
- loosened (breaks FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE): min lowered or
  removed, max raised or removed, one_of values added or one_of removed, not_null
  removed (or the field made nullable), max_length raised or removed, pattern removed;
- a changed pattern counts as both: we cannot prove that one regex includes another;
- the entity fields, the event-time field, or the event-time unit (timestamp-millis vs
  -micros, which the Avro checker ignores) changed: breaks every level except NONE; a
  plain schema adopting its first contract (no entity or event time before) is not such
  a change, though the constraints it adds are tightenings like any other;
- owner, pii, max_future_skew and max_age changes never break; `describe_contract_changes`
  lists them with empty `breaks`.

Constraints are compared on fields present in both versions, matched by name; a field
that appears or disappears is judged by the Avro part alone.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import avro.schema
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityResult,
    SchemaCompatibilityType,
    lookup_writer_field,
)

from featurestore.contracts.contract import (
    Contract,
    FieldRules,
    contract_from_schema,
    parse_avro_schema,
)
from featurestore.errors import ConfigError


class CompatibilityLevel(StrEnum):
    """A subject's compatibility rule, by Confluent Schema Registry's names."""

    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"


_BACKWARD: Final = CompatibilityLevel.BACKWARD
_FORWARD: Final = CompatibilityLevel.FORWARD
_TIGHTENED: Final[frozenset[str]] = frozenset({_BACKWARD})
_LOOSENED: Final[frozenset[str]] = frozenset({_FORWARD})
_BOTH: Final[frozenset[str]] = frozenset({_BACKWARD, _FORWARD})
_NOTE: Final[frozenset[str]] = frozenset()

_DIRECTIONS: Final[Mapping[CompatibilityLevel, tuple[CompatibilityLevel, ...]]] = {
    CompatibilityLevel.BACKWARD: (_BACKWARD,),
    CompatibilityLevel.BACKWARD_TRANSITIVE: (_BACKWARD,),
    CompatibilityLevel.FORWARD: (_FORWARD,),
    CompatibilityLevel.FORWARD_TRANSITIVE: (_FORWARD,),
    CompatibilityLevel.FULL: (_BACKWARD, _FORWARD),
    CompatibilityLevel.FULL_TRANSITIVE: (_BACKWARD, _FORWARD),
    CompatibilityLevel.NONE: (),
}

SchemaText = str | Mapping[str, Any]

# The checker's __init__ has no annotations; calling it through this typed name keeps
# mypy strict everywhere else. A fresh checker per pair: it memoises results by object
# identity, together with the location where it first met them.
_new_checker: Callable[[], ReaderWriterCompatibilityChecker] = ReaderWriterCompatibilityChecker


@dataclass(frozen=True, slots=True)
class ContractChange:
    """One difference between two contracts.

    `breaks` holds "BACKWARD" when the new contract rejects events the old accepted, and
    "FORWARD" when it accepts events the old rejected; empty for a harmless change.
    """

    description: str
    field: str | None = None
    breaks: frozenset[str] = _NOTE


def check_compatibility(
    new: SchemaText,
    existing: Sequence[tuple[int, SchemaText]],
    level: CompatibilityLevel | str,
) -> list[str]:
    """Reasons `new` may not follow `existing` (oldest first) under `level`; [] if it may.

    Raises ContractError when a schema is not a valid contract, and ConfigError for an
    unknown level.
    """
    try:
        level = CompatibilityLevel(level)
    except ValueError:
        raise ConfigError(
            f"unknown compatibility level {level!r}; use one of {', '.join(CompatibilityLevel)}"
        ) from None
    new_schema = parse_avro_schema(new)
    new_contract = contract_from_schema(new_schema)
    directions = _DIRECTIONS[level]
    if not directions or not existing:
        return []
    checked = existing if level.endswith("_TRANSITIVE") else existing[-1:]
    reasons: list[str] = []
    for version, text in checked:
        old_schema = parse_avro_schema(text)
        changes = describe_contract_changes(contract_from_schema(old_schema), new_contract)
        for direction in directions:
            if direction is _BACKWARD:
                label = f"BACKWARD: the new schema reads data written with version {version}"
                details = _avro_details(reader=new_schema, writer=old_schema)
            else:
                label = f"FORWARD: version {version} reads data written with the new schema"
                details = _avro_details(reader=old_schema, writer=new_schema)
            reasons += [f"incompatible with version {version} ({label}): {d}" for d in details]
            reasons += [
                f"incompatible with version {version} ({direction} contract): {c.description}"
                for c in changes
                if direction in c.breaks
            ]
    return reasons


def describe_contract_changes(old: Contract, new: Contract) -> list[ContractChange]:
    """Every difference from `old` to `new` contract metadata, breaking or not."""
    changes: list[ContractChange] = []
    # A plain schema that adopts a contract gains an entity and a clock: no keys or
    # windows existed before, so that is not a change of either.
    if old.entity != new.entity and old.entity:
        changes.append(
            ContractChange(
                f"entity changed from {_names(old.entity)} to {_names(new.entity)}; keys "
                "would no longer match: register the new key under a new subject",
                breaks=_BOTH,
            )
        )
    if old.event_time != new.event_time and old.event_time is not None:
        changes.append(
            ContractChange(
                f"event_time field changed from {old.event_time!r} to {new.event_time!r}; "
                "windows would be cut on a different clock: keep the event_time field",
                field=new.event_time,
                breaks=_BOTH,
            )
        )
    elif new.event_time is not None and old.event_time is not None:
        old_unit = old.fields[new.event_time].logical_type
        new_unit = new.fields[new.event_time].logical_type
        if old_unit != new_unit:
            changes.append(
                ContractChange(
                    f"event_time field '{new.event_time}' changed unit from {old_unit} to "
                    f"{new_unit}; old and new events would disagree by a factor of 1000",
                    field=new.event_time,
                    breaks=_BOTH,
                )
            )
    for key in ("owner", "max_future_skew_ms", "max_age_ms"):
        before, after = getattr(old, key), getattr(new, key)
        if before != after:
            changes.append(ContractChange(f"{key} changed from {before!r} to {after!r}"))
    for name, after_rules in new.fields.items():
        before_rules = old.fields.get(name)
        if before_rules is not None:
            changes += _field_changes(before_rules, after_rules)
    return changes


def _field_changes(old: FieldRules, new: FieldRules) -> list[ContractChange]:
    name = new.name
    changes: list[ContractChange] = []

    def add(description: str, breaks: frozenset[str]) -> None:
        changes.append(ContractChange(f"field '{name}': {description}", name, breaks))

    if old.pii != new.pii:
        add("marked pii" if new.pii else "no longer marked pii", _NOTE)
    before, after = old.constraints, new.constraints
    rejected_null = before.not_null or not old.nullable
    rejects_null = after.not_null or not new.nullable
    if rejects_null and not rejected_null:
        add("no longer accepts null", _TIGHTENED)
    elif rejected_null and not rejects_null:
        add("now accepts null", _LOOSENED)
    for key, lowest_first in (("min", True), ("max", False), ("max_length", False)):
        was, now = getattr(before, key), getattr(after, key)
        if was == now:
            continue
        if now is None or was is None:
            tighter = now is not None
        else:
            tighter = now > was if lowest_first else now < was
        add(
            f"{key} changed from {_shown(was)} to {_shown(now)}",
            _TIGHTENED if tighter else _LOOSENED,
        )
    if _value_set(before.one_of) != _value_set(after.one_of):
        add(
            f"one_of changed from {_shown(before.one_of)} to {_shown(after.one_of)}",
            _set_breaks(before.one_of, after.one_of),
        )
    if before.pattern != after.pattern:
        if before.pattern is None:
            breaks = _TIGHTENED
        elif after.pattern is None:
            breaks = _LOOSENED
        else:
            breaks = _BOTH
        add(f"pattern changed from {_shown(before.pattern)} to {_shown(after.pattern)}", breaks)
    return changes


def _value_set(values: tuple[object, ...] | None) -> frozenset[object] | None:
    return None if values is None else frozenset(values)


def _set_breaks(old: tuple[object, ...] | None, new: tuple[object, ...] | None) -> frozenset[str]:
    if old is None:
        return _TIGHTENED
    if new is None:
        return _LOOSENED
    breaks: set[str] = set()
    if set(old) - set(new):
        breaks.add(_BACKWARD)
    if set(new) - set(old):
        breaks.add(_FORWARD)
    return frozenset(breaks)


def _shown(value: object) -> str:
    if value is None:
        return "absent"
    if isinstance(value, tuple):
        return "[" + ", ".join(map(repr, value)) + "]"
    return repr(value)


def _names(names: tuple[str, ...]) -> str:
    return "(" + ", ".join(names) + ")" if names else "(none)"


# --- Avro: run the checker, then say in words what it found ---------------------------


def _avro_details(reader: avro.schema.Schema, writer: avro.schema.Schema) -> list[str]:
    """The checker's incompatibilities for one reader/writer pair, one sentence each.

    The checker reports a list of types but *sets* of messages and locations that are not
    paired, so for records each top-level reader field is checked on its own (exactly as
    the checker's record rule does) to say which field a message belongs to.
    """
    result = _new_checker().get_compatibility(reader, writer)
    if result.compatibility is not SchemaCompatibilityType.incompatible:
        return []
    if not (
        isinstance(reader, avro.schema.RecordSchema)
        and isinstance(writer, avro.schema.RecordSchema)
    ):
        return _sentences(result)
    details: list[str] = []
    explained: set[str] = set()
    for index, reader_field in enumerate(reader.fields):
        name = str(reader_field.name)
        writer_field = lookup_writer_field(writer_schema=writer, reader_field=reader_field)
        if writer_field is None:
            if not reader_field.has_default:
                details.append(
                    f"reader field '{name}' has no default and is missing from the writer "
                    f"schema (at /fields/{index})"
                )
                # For an enum field with an enum-level default the checker instead
                # compares the enum with the whole writer record: same verdict, odd words.
                explained |= {
                    name,
                    f"reader type: enum not compatible with writer type: {writer.type}",
                }
            continue
        field_result = _new_checker().get_compatibility(
            reader_field.type, writer_field.type, "type", ["/", "fields", str(index)]
        )
        if field_result.compatibility is SchemaCompatibilityType.incompatible:
            details += [f"field '{name}': {s}" for s in _sentences(field_result)]
            explained |= field_result.messages
    details += [_sentence(m) for m in sorted(result.messages - explained)]
    return details


def _sentences(result: SchemaCompatibilityResult) -> list[str]:
    messages = sorted(result.messages)
    # The checker adds "/" to the locations whenever it merges in a compatible result.
    locations = sorted(set(result.locations) - {"/"})
    if len(messages) == 1 and len(locations) == 1:
        return [f"{_sentence(messages[0])} (at {locations[0]})"]
    return [_sentence(m) for m in messages]


_TYPE_MISMATCH: Final = re.compile(r"reader type: (\w+) not compatible with writer type: (\w+)")
_MISSING_BRANCH: Final = re.compile(r"reader union lacking writer type:? (\w+)")
_FIXED_SIZE: Final = re.compile(r"expected: (\d+), found: (\d+)")
_NAME: Final = re.compile(r"expected: (\S+)")
_FIELD_NAME: Final = re.compile(r"[A-Za-z_]\w*")


def _sentence(message: str) -> str:
    """Turn one checker message (formats fixed in avro/compatibility.py) into a sentence."""
    if match := _TYPE_MISMATCH.fullmatch(message):
        return f"a {match[2]} written value cannot be read as {match[1]}"
    if match := _MISSING_BRANCH.fullmatch(message):
        return f"the reader's union has no branch for the writer's {match[1].lower()}"
    if match := _FIXED_SIZE.fullmatch(message):
        return f"fixed size differs: the writer's is {match[1]}, the reader's {match[2]}"
    if match := _NAME.fullmatch(message):
        return (
            f"the reader's type name differs from the writer's {match[1]}; keep the name "
            "or add the old one to the reader's aliases"
        )
    if _FIELD_NAME.fullmatch(message):
        return f"reader field '{message}' has no default and is missing from the writer schema"
    if message.startswith("{"):
        try:
            symbols = sorted(map(str, ast.literal_eval(message)))
        except (ValueError, SyntaxError, TypeError):
            return message
        return f"the reader's enum lacks the writer's symbol(s) {', '.join(symbols)}"
    return message

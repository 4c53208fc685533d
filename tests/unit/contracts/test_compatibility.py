"""Unit tests for featurestore.contracts.compatibility: Avro and contract evolution rules."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.contracts import (
    CompatibilityLevel,
    ContractChange,
    check_compatibility,
    describe_contract_changes,
    parse_contract,
)
from featurestore.errors import ConfigError, ContractError

Schema = dict[str, Any]
L = CompatibilityLevel
BACKWARD_FAMILY = {L.BACKWARD, L.BACKWARD_TRANSITIVE}
FORWARD_FAMILY = {L.FORWARD, L.FORWARD_TRANSITIVE}
TS = {"type": "long", "logicalType": "timestamp-millis"}


def record(*fields: dict[str, Any], featurestore: dict[str, Any] | None = None) -> Schema:
    schema: Schema = {"type": "record", "name": "Payment", "fields": list(fields)}
    if featurestore is not None:
        schema["featurestore"] = featurestore
    return schema


def f(name: str, avro_type: object, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": avro_type, **extra}


def enum(*symbols: str) -> dict[str, Any]:
    return {"type": "enum", "name": "Channel", "symbols": list(symbols)}


ID = f("id", "string")


def contract() -> Schema:
    """A small contract whose `amount`, `code` and `channel` fields carry the constraints."""
    return record(
        f("card_id", "string"),
        f("ts", TS),
        f("amount", ["null", "double"], default=None),
        f("code", "string"),
        f("channel", enum("POS", "ONLINE", "ATM")),
        featurestore={"entity": ["card_id"], "event_time": "ts", "owner": "a@example.com"},
    )


def with_constraints(field: str, **constraints: Any) -> Schema:
    schema = contract()
    target = next(x for x in schema["fields"] if x["name"] == field)
    target["constraints"] = constraints
    return schema


@dataclass(frozen=True)
class Change:
    """old -> new, and whether each direction still holds after the change."""

    id: str
    old: Schema
    new: Schema
    backward_ok: bool
    forward_ok: bool


CHANGES = [
    Change(
        "field added with default", record(ID), record(ID, f("n", "int", default=0)), True, True
    ),
    Change("field added without default", record(ID), record(ID, f("n", "int")), False, True),
    Change(
        "field removed, had default", record(ID, f("n", "int", default=0)), record(ID), True, True
    ),
    Change("field removed, had no default", record(ID, f("n", "int")), record(ID), True, False),
    Change("int -> long", record(ID, f("n", "int")), record(ID, f("n", "long")), True, False),
    Change(
        "float -> double", record(ID, f("n", "float")), record(ID, f("n", "double")), True, False
    ),
    Change("int -> double", record(ID, f("n", "int")), record(ID, f("n", "double")), True, False),
    Change("long -> int", record(ID, f("n", "long")), record(ID, f("n", "int")), False, True),
    Change(
        "double -> float", record(ID, f("n", "double")), record(ID, f("n", "float")), False, True
    ),
    Change("double -> int", record(ID, f("n", "double")), record(ID, f("n", "int")), False, True),
    Change("string -> int", record(ID, f("n", "string")), record(ID, f("n", "int")), False, False),
    Change(
        "enum symbol added",
        record(ID, f("c", enum("A", "B"))),
        record(ID, f("c", enum("A", "B", "C"))),
        True,
        False,
    ),
    Change(
        "enum symbol removed",
        record(ID, f("c", enum("A", "B"))),
        record(ID, f("c", enum("A"))),
        False,
        True,
    ),
    Change(
        "union widened",
        record(ID, f("u", ["null", "string"])),
        record(ID, f("u", ["null", "string", "int"])),
        True,
        False,
    ),
    Change(
        "union narrowed",
        record(ID, f("u", ["null", "string", "int"])),
        record(ID, f("u", ["null", "string"])),
        False,
        True,
    ),
    Change(
        "made nullable",
        record(ID, f("u", "string")),
        record(ID, f("u", ["null", "string"])),
        True,
        False,
    ),
    # Contract metadata: tightened breaks BACKWARD, loosened breaks FORWARD.
    Change(
        "min raised",
        with_constraints("amount", min=0),
        with_constraints("amount", min=10),
        False,
        True,
    ),
    Change("min added", contract(), with_constraints("amount", min=0), False, True),
    Change(
        "min lowered",
        with_constraints("amount", min=10),
        with_constraints("amount", min=0),
        True,
        False,
    ),
    Change("min removed", with_constraints("amount", min=0), contract(), True, False),
    Change(
        "max lowered",
        with_constraints("amount", max=10),
        with_constraints("amount", max=5),
        False,
        True,
    ),
    Change(
        "max raised",
        with_constraints("amount", max=5),
        with_constraints("amount", max=10),
        True,
        False,
    ),
    Change(
        "one_of value removed",
        with_constraints("code", one_of=["A", "B"]),
        with_constraints("code", one_of=["A"]),
        False,
        True,
    ),
    Change(
        "one_of value added",
        with_constraints("code", one_of=["A"]),
        with_constraints("code", one_of=["A", "B"]),
        True,
        False,
    ),
    Change(
        "one_of value swapped",
        with_constraints("code", one_of=["A"]),
        with_constraints("code", one_of=["B"]),
        False,
        False,
    ),
    Change(
        "one_of reordered",
        with_constraints("code", one_of=["A", "B"]),
        with_constraints("code", one_of=["B", "A"]),
        True,
        True,
    ),
    Change("one_of removed", with_constraints("code", one_of=["A"]), contract(), True, False),
    Change("not_null added", contract(), with_constraints("amount", not_null=True), False, True),
    Change("not_null removed", with_constraints("amount", not_null=True), contract(), True, False),
    Change(
        "not_null on a non-nullable field is a no-op",
        contract(),
        with_constraints("code", not_null=True),
        True,
        True,
    ),
    Change(
        "max_length lowered",
        with_constraints("code", max_length=8),
        with_constraints("code", max_length=4),
        False,
        True,
    ),
    Change("max_length removed", with_constraints("code", max_length=8), contract(), True, False),
    Change("pattern added", contract(), with_constraints("code", pattern="^[A-Z]+$"), False, True),
    Change(
        "pattern removed", with_constraints("code", pattern="^[A-Z]+$"), contract(), True, False
    ),
    Change(
        "pattern changed",
        with_constraints("code", pattern="^[A-Z]+$"),
        with_constraints("code", pattern="^[A-Z]{3}$"),
        False,
        False,
    ),
]


def _entity_changed() -> Schema:
    schema = contract()
    schema["featurestore"]["entity"] = ["code"]
    return schema


def _event_time_changed() -> Schema:
    schema = contract()
    schema["fields"].append(f("ts2", TS))
    schema["featurestore"]["event_time"] = "ts2"
    return schema


def _notes_changed() -> Schema:
    schema = contract()
    schema["featurestore"].update(owner="b@example.com", max_age="1d", max_future_skew="1m")
    schema["fields"][2]["pii"] = True
    return schema


CHANGES += [
    Change("entity changed", contract(), _entity_changed(), False, False),
    Change("event_time changed", contract(), _event_time_changed(), False, False),
    Change("owner, pii, skew and age changed", contract(), _notes_changed(), True, True),
]


def expected_compatible(level: CompatibilityLevel, change: Change) -> bool:
    if level is L.NONE:
        return True
    if level in BACKWARD_FAMILY:
        return change.backward_ok
    if level in FORWARD_FAMILY:
        return change.forward_ok
    return change.backward_ok and change.forward_ok


@pytest.mark.parametrize("level", list(CompatibilityLevel))
@pytest.mark.parametrize("change", CHANGES, ids=[c.id for c in CHANGES])
def test_change_matrix(change: Change, level: CompatibilityLevel) -> None:
    reasons = check_compatibility(change.new, [(3, change.old)], level)
    assert (reasons == []) == expected_compatible(level, change), reasons
    assert all(r.startswith("incompatible with version 3 (") for r in reasons)


def test_missing_field_reason_names_the_field_and_location() -> None:
    reasons = check_compatibility(record(ID, f("n", "int")), [(1, record(ID))], L.BACKWARD)
    assert reasons == [
        "incompatible with version 1 (BACKWARD: the new schema reads data written with "
        "version 1): reader field 'n' has no default and is missing from the writer schema "
        "(at /fields/1)"
    ]


def test_forward_reason_says_the_old_version_reads_new_data() -> None:
    reasons = check_compatibility(record(ID), [(2, record(ID, f("n", "int")))], L.FORWARD)
    assert reasons == [
        "incompatible with version 2 (FORWARD: version 2 reads data written with the new "
        "schema): reader field 'n' has no default and is missing from the writer schema "
        "(at /fields/1)"
    ]


@pytest.mark.parametrize(
    ("old", "new", "detail"),
    [
        (
            f("n", "long"),
            f("n", "int"),
            "field 'n': a long written value cannot be read as int (at /fields/1/type)",
        ),
        (
            f("c", enum("A", "B")),
            f("c", enum("A")),
            "field 'c': the reader's enum lacks the writer's symbol(s) B "
            "(at /fields/1/type/symbols)",
        ),
        (
            f("u", ["null", "string", "int"]),
            f("u", ["null", "string"]),
            "field 'u': the reader's union has no branch for the writer's int "
            "(at /fields/1/type/2)",
        ),
    ],
)
def test_type_reasons_name_the_field(old: dict[str, Any], new: dict[str, Any], detail: str) -> None:
    (reason,) = check_compatibility(record(ID, new), [(1, record(ID, old))], L.BACKWARD)
    assert reason.endswith(f"): {detail}")


def test_every_problem_is_reported_once_per_field() -> None:
    old = record(ID, f("a", "long"), f("b", "string"))
    new = record(ID, f("a", "int"), f("b", "int"), f("c", "int"))
    reasons = check_compatibility(new, [(1, old)], L.BACKWARD)
    details = [r.split("): ", 1)[1] for r in reasons]
    assert details == [
        "field 'a': a long written value cannot be read as int (at /fields/1/type)",
        "field 'b': a string written value cannot be read as int (at /fields/2/type)",
        "reader field 'c' has no default and is missing from the writer schema (at /fields/3)",
    ]


def test_missing_enum_field_with_enum_default_is_reported_as_missing() -> None:
    # The checker words this case as an enum-versus-record type mismatch; the reason
    # should still say what is wrong.
    channel = f("c", {**enum("A", "B"), "default": "A"})
    (reason,) = check_compatibility(record(ID, channel), [(1, record(ID))], L.BACKWARD)
    assert reason.endswith(
        "reader field 'c' has no default and is missing from the writer schema (at /fields/1)"
    )


def test_renamed_record_is_reported() -> None:
    renamed = record(ID)
    renamed["name"] = "Charge"
    (reason,) = check_compatibility(renamed, [(1, record(ID))], L.BACKWARD)
    assert "type name differs from the writer's Payment" in reason


def test_contract_reason_names_version_direction_and_change() -> None:
    reasons = check_compatibility(
        with_constraints("amount", min=10), [(4, with_constraints("amount", min=0))], L.FULL
    )
    assert reasons == [
        "incompatible with version 4 (BACKWARD contract): field 'amount': min changed from 0 to 10"
    ]


def test_event_time_unit_change_breaks_every_level_though_avro_allows_it() -> None:
    micros = contract()
    micros["fields"][1]["type"] = {"type": "long", "logicalType": "timestamp-micros"}
    plain_old, plain_new = copy.deepcopy(contract()), copy.deepcopy(micros)
    del plain_old["featurestore"], plain_new["featurestore"]
    # The Avro checker compares only the underlying long, so without a contract it passes.
    assert check_compatibility(plain_new, [(1, plain_old)], L.FULL) == []
    for level in set(CompatibilityLevel) - {L.NONE}:
        (reason,) = {
            r.split("): ", 1)[1] for r in check_compatibility(micros, [(1, contract())], level)
        }
        assert "changed unit from timestamp-millis to timestamp-micros" in reason


# v3 is compatible with v2 but not with v1 in each chain.
BACKWARD_CHAIN = [record(ID), record(ID, f("n", "int", default=0)), record(ID, f("n", "int"))]
FORWARD_CHAIN = [record(ID, f("n", "int")), record(ID, f("n", "int", default=0)), record(ID)]


@pytest.mark.parametrize(
    ("level", "chain", "compatible"),
    [
        (L.BACKWARD, BACKWARD_CHAIN, True),
        (L.BACKWARD_TRANSITIVE, BACKWARD_CHAIN, False),
        (L.FULL, BACKWARD_CHAIN, True),
        (L.FULL_TRANSITIVE, BACKWARD_CHAIN, False),
        (L.FORWARD, FORWARD_CHAIN, True),
        (L.FORWARD_TRANSITIVE, FORWARD_CHAIN, False),
        (L.FULL, FORWARD_CHAIN, True),
        (L.FULL_TRANSITIVE, FORWARD_CHAIN, False),
        (L.NONE, BACKWARD_CHAIN, True),
    ],
)
def test_transitive_levels_check_every_version(
    level: CompatibilityLevel, chain: list[Schema], compatible: bool
) -> None:
    *existing, new = chain
    reasons = check_compatibility(new, list(enumerate(existing, start=1)), level)
    assert (reasons == []) is compatible
    assert all(r.startswith("incompatible with version 1 (") for r in reasons)


def test_no_existing_versions_is_compatible() -> None:
    assert check_compatibility(record(ID), [], L.FULL_TRANSITIVE) == []


def test_level_may_be_given_as_its_name() -> None:
    assert check_compatibility(record(ID, f("n", "int")), [(1, record(ID))], "FORWARD") == []


def test_unknown_level_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown compatibility level 'SIDEWAYS'"):
        check_compatibility(record(ID), [(1, record(ID))], "SIDEWAYS")


def test_invalid_new_schema_is_rejected_even_under_none() -> None:
    with pytest.raises(ContractError, match="not valid JSON"):
        check_compatibility("{", [(1, record(ID))], L.NONE)


def test_describe_contract_changes_lists_notes_with_no_breaks() -> None:
    changes = describe_contract_changes(
        parse_contract(contract()), parse_contract(_notes_changed())
    )
    assert changes == [
        ContractChange("owner changed from 'a@example.com' to 'b@example.com'"),
        ContractChange("max_future_skew_ms changed from None to 60000"),
        ContractChange("max_age_ms changed from None to 86400000"),
        ContractChange("field 'amount': marked pii", field="amount"),
    ]


def test_describe_contract_changes_marks_both_directions() -> None:
    old = parse_contract(with_constraints("code", one_of=["A"], pattern="^A$"))
    new = parse_contract(with_constraints("code", one_of=["B"], pattern="^B$"))
    both = frozenset({"BACKWARD", "FORWARD"})
    assert [c.breaks for c in describe_contract_changes(old, new)] == [both, both]


def test_entity_change_describes_old_and_new_keys() -> None:
    (change,) = describe_contract_changes(
        parse_contract(contract()), parse_contract(_entity_changed())
    )
    assert change.description.startswith("entity changed from (card_id) to (code)")
    assert change.breaks == {"BACKWARD", "FORWARD"}


def test_a_plain_schema_adopting_a_contract_changes_no_key_or_clock() -> None:
    plain = contract()
    del plain["featurestore"]
    changes = describe_contract_changes(parse_contract(plain), parse_contract(contract()))
    assert all(not c.breaks for c in changes)
    assert check_compatibility(contract(), [(1, plain)], L.FULL) == []
    # Dropping the contract again does change the key: consumers could no longer group.
    assert check_compatibility(plain, [(1, contract())], L.BACKWARD)


# --- properties -----------------------------------------------------------------------

NAMES = ["a", "b", "c", "d", "e"]
PRIMITIVES = ["int", "long", "float", "double", "string", "boolean", "bytes"]


@st.composite
def schemas(draw: st.DrawFn) -> Schema:
    """Small record schemas with optional defaults and constraints."""
    fields: list[dict[str, Any]] = []
    for name in draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True)):
        kind = draw(st.sampled_from([*PRIMITIVES, "nullable", "enum"]))
        field: dict[str, Any] = {"name": name}
        if kind == "nullable":
            field["type"] = ["null", draw(st.sampled_from(PRIMITIVES))]
            if draw(st.booleans()):
                field["default"] = None
        elif kind == "enum":
            symbols = draw(st.lists(st.sampled_from("XYZ"), min_size=1, unique=True))
            field["type"] = {"type": "enum", "name": f"E{name}", "symbols": symbols}
            if draw(st.booleans()):
                field["constraints"] = {"one_of": symbols[:1]}
        else:
            field["type"] = kind
            if kind in ("int", "long") and draw(st.booleans()):
                field["default"] = 0
            if kind in ("int", "long", "float", "double") and draw(st.booleans()):
                low = draw(st.integers(-5, 5))
                field["constraints"] = {"min": low, "max": low + draw(st.integers(0, 5))}
            if kind == "string" and draw(st.booleans()):
                field["constraints"] = {"pattern": draw(st.sampled_from(["^a", "^b", "z$"]))}
        fields.append(field)
    return record(*fields)


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(schema=schemas())
def test_any_schema_is_compatible_with_itself_at_every_level(schema: Schema) -> None:
    for level in CompatibilityLevel:
        assert check_compatibility(schema, [(1, schema)], level) == []


@FAST
@given(new=schemas(), old=schemas())
def test_none_accepts_anything(new: Schema, old: Schema) -> None:
    assert check_compatibility(new, [(1, old)], L.NONE) == []


@FAST
@given(new=schemas(), old=schemas())
def test_full_is_backward_and_forward_together(new: Schema, old: Schema) -> None:
    def reasons(level: CompatibilityLevel) -> set[str]:
        return set(check_compatibility(new, [(1, old)], level))

    assert reasons(L.FULL) == reasons(L.BACKWARD) | reasons(L.FORWARD)
    assert reasons(L.FULL_TRANSITIVE) == reasons(L.FULL)

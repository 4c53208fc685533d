"""Unit tests for featurestore.contracts.contract: parsing and validating contract metadata."""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from featurestore.contracts import Constraints, Contract, FieldRules, parse_contract
from featurestore.errors import ContractError, FeatureStoreError

Schema = dict[str, Any]


def card_payment() -> Schema:
    """A complete, valid contract: every kind of metadata appears at least once."""
    return {
        "type": "record",
        "name": "CardPayment",
        "namespace": "example.payments",
        "featurestore": {
            "entity": ["card_id"],
            "event_time": "ts",
            "owner": "payments-team@example.com",
            "max_future_skew": "5m",
            "max_age": "7d",
        },
        "fields": [
            {
                "name": "card_id",
                "type": "string",
                "pii": True,
                "constraints": {"not_null": True, "max_length": 64},
            },
            {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "amount", "type": "double", "constraints": {"min": 0, "max": 1e6}},
            {"name": "currency", "type": "string", "constraints": {"pattern": "^[A-Z]{3}$"}},
            {
                "name": "channel",
                "type": {"type": "enum", "name": "Channel", "symbols": ["POS", "ONLINE", "ATM"]},
                "constraints": {"one_of": ["POS", "ONLINE"]},
            },
            {"name": "merchant", "type": ["null", "string"], "default": None},
            {
                "name": "mcc",
                "type": ["null", "int"],
                "default": None,
                "constraints": {"min": 0, "one_of": [5411, 5812]},
            },
        ],
    }


def field_named(schema: Schema, name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def constrain(name: str, **constraints: object) -> Callable[[Schema], None]:
    def mutate(schema: Schema) -> None:
        field_named(schema, name).setdefault("constraints", {}).update(constraints)

    return mutate


def set_type(name: str, avro_type: object) -> Callable[[Schema], None]:
    def mutate(schema: Schema) -> None:
        field_named(schema, name)["type"] = avro_type

    return mutate


def constraints_as_list(name: str) -> Callable[[Schema], None]:
    def mutate(schema: Schema) -> None:
        field_named(schema, name)["constraints"] = [{"min": 0}]

    return mutate


def set_block(**entries: object) -> Callable[[Schema], None]:
    def mutate(schema: Schema) -> None:
        schema["featurestore"].update(entries)

    return mutate


def test_card_payment_contract_parses_with_all_metadata() -> None:
    contract = parse_contract(card_payment())

    assert contract.entity == ("card_id",)
    assert contract.event_time == "ts"
    assert contract.owner == "payments-team@example.com"
    assert contract.max_future_skew_ms == 5 * 60 * 1000
    assert contract.max_age_ms == 7 * 24 * 3600 * 1000
    assert list(contract.fields) == [
        "card_id",
        "ts",
        "amount",
        "currency",
        "channel",
        "merchant",
        "mcc",
    ]
    assert contract.pii_fields == frozenset({"card_id"})
    assert contract.fields["card_id"] == FieldRules(
        name="card_id",
        avro_type="string",
        logical_type=None,
        nullable=False,
        constraints=Constraints(not_null=True, max_length=64),
        pii=True,
    )
    assert contract.fields["ts"].logical_type == "timestamp-millis"
    assert contract.fields["amount"].constraints == Constraints(min=0, max=1e6)
    assert contract.fields["currency"].constraints.pattern == "^[A-Z]{3}$"
    assert contract.fields["channel"].avro_type == "enum"
    assert contract.fields["channel"].constraints.one_of == ("POS", "ONLINE")
    assert contract.fields["merchant"].nullable
    assert contract.fields["merchant"].constraints == Constraints()
    mcc = contract.fields["mcc"]
    assert (mcc.avro_type, mcc.nullable, mcc.constraints.one_of) == ("int", True, (5411, 5812))


def test_json_text_and_object_give_the_same_contract() -> None:
    assert parse_contract(json.dumps(card_payment())) == parse_contract(card_payment())


def test_contract_is_frozen_hashable_and_its_fields_read_only() -> None:
    contract = parse_contract(card_payment())
    with pytest.raises(dataclasses.FrozenInstanceError):
        contract.owner = "someone-else"  # type: ignore[misc]
    with pytest.raises(TypeError):
        contract.fields["x"] = contract.fields["ts"]  # type: ignore[index]
    assert hash(contract) == hash(parse_contract(card_payment()))


def test_entity_may_be_a_single_name_or_several() -> None:
    schema = card_payment()
    schema["featurestore"]["entity"] = "card_id"
    assert parse_contract(schema).entity == ("card_id",)
    schema["featurestore"]["entity"] = ["card_id", "currency"]
    assert parse_contract(schema).entity == ("card_id", "currency")


@pytest.mark.parametrize(
    ("written", "ms"),
    [
        ("250ms", 250),
        ("30s", 30_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("7d", 604_800_000),
        (1500, 1500),
        (0, 0),
    ],
)
def test_durations_are_read_as_milliseconds(written: object, ms: int) -> None:
    schema = card_payment()
    schema["featurestore"].update(max_future_skew=written, max_age=written)
    contract = parse_contract(schema)
    assert (contract.max_future_skew_ms, contract.max_age_ms) == (ms, ms)


@given(amount=st.integers(min_value=0, max_value=10**6), unit=st.sampled_from("smhd"))
def test_any_whole_duration_converts_exactly(amount: int, unit: str) -> None:
    schema = card_payment()
    schema["featurestore"]["max_age"] = f"{amount}{unit}"
    factor = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[unit]
    assert parse_contract(schema).max_age_ms == amount * factor


@pytest.mark.parametrize("written", ["5 minutes", "1.5h", "-1s", "5w", -1, True, 2.5, ""])
def test_bad_durations_are_rejected(written: object) -> None:
    schema = card_payment()
    schema["featurestore"]["max_age"] = written
    with pytest.raises(ContractError, match=r"featurestore\.max_age"):
        parse_contract(schema)


def test_schema_without_a_featurestore_block_is_a_plain_contract() -> None:
    schema = card_payment()
    del schema["featurestore"]
    contract = parse_contract(schema)
    assert (contract.entity, contract.event_time, contract.owner) == ((), None, None)
    assert contract.max_age_ms is None
    assert contract.fields["amount"].constraints.max == 1e6


def test_plain_schema_constraints_are_still_checked() -> None:
    schema = card_payment()
    del schema["featurestore"]
    constrain("amount", pattern="x")(schema)
    with pytest.raises(ContractError, match="'pattern' applies to strings"):
        parse_contract(schema)


@pytest.mark.parametrize(
    "schema", ['"string"', ["null", "string"], {"type": "array", "items": "int"}]
)
def test_non_record_schemas_have_no_field_rules(schema: Any) -> None:
    assert parse_contract(schema if isinstance(schema, str) else json.dumps(schema)) == Contract()


def test_non_record_schema_may_not_carry_a_featurestore_block() -> None:
    with pytest.raises(ContractError, match="needs a record schema"):
        parse_contract({"type": "string", "featurestore": {"entity": "x"}})


def test_constraints_on_nested_records_are_ignored() -> None:
    schema = card_payment()
    schema["fields"].append(
        {
            "name": "address",
            "type": {
                "type": "record",
                "name": "Address",
                "fields": [{"name": "zip", "type": "int", "constraints": {"bogus": 1}}],
            },
        }
    )
    assert parse_contract(schema).fields["address"].avro_type == "record"


def test_unknown_logical_types_parse_quietly() -> None:
    schema = card_payment()
    schema["fields"].append({"name": "x", "type": {"type": "long", "logicalType": "nonsense"}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_contract(schema).fields["x"].logical_type is None


INVALID: list[tuple[str, Callable[[Schema], None], str | None, str]] = [
    ("entity missing", set_block(entity=["cardid"]), "cardid", "not a top-level field"),
    ("entity nullable", set_type("card_id", ["null", "string"]), "card_id", "is nullable"),
    ("entity empty list", set_block(entity=[]), None, "non-empty list"),
    ("entity not names", set_block(entity=[1]), None, "non-empty list of field names"),
    ("entity twice", set_block(entity=["card_id", "card_id"]), None, "names a field twice"),
    ("event_time missing", set_block(event_time="when"), "when", "not a top-level field"),
    ("event_time plain long", set_type("ts", "long"), "ts", "timestamp-millis"),
    ("event_time string", set_type("ts", "string"), "ts", "is string"),
    (
        "event_time int with timestamp",
        set_type("ts", {"type": "int", "logicalType": "timestamp-millis"}),
        "ts",
        "is int",
    ),
    (
        "event_time nullable",
        set_type("ts", ["null", {"type": "long", "logicalType": "timestamp-millis"}]),
        "ts",
        "is nullable",
    ),
    ("min on a string", constrain("currency", min=0), "currency", "'min' applies to numbers"),
    ("max on an enum", constrain("channel", max=3), "channel", "'max' applies to numbers"),
    ("min not a number", constrain("amount", min="0"), "amount", "write a finite number"),
    ("min a bool", constrain("amount", min=True), "amount", "write a finite number"),
    ("min > max", constrain("amount", min=10, max=1), "amount", "min 10 is greater than max 1"),
    ("pattern on a double", constrain("amount", pattern="^1$"), "amount", "applies to strings"),
    ("pattern not compiling", constrain("currency", pattern="[A-Z"), "currency", "not compile"),
    ("pattern not a string", constrain("currency", pattern=3), "currency", "expression string"),
    ("one_of mixed types", constrain("currency", one_of=["USD", 1]), "currency", "strings"),
    ("one_of strings on number", constrain("amount", one_of=["1"]), "amount", "never match"),
    ("one_of fraction on int", constrain("mcc", one_of=[1.5]), "mcc", "whole numbers"),
    ("one_of unknown symbol", constrain("channel", one_of=["POS", "KIOSK"]), "channel", "KIOSK"),
    ("one_of empty", constrain("currency", one_of=[]), "currency", "non-empty list"),
    ("one_of not a list", constrain("currency", one_of="USD"), "currency", "non-empty list"),
    ("max_length on a number", constrain("amount", max_length=3), "amount", "strings and bytes"),
    ("max_length negative", constrain("card_id", max_length=-1), "card_id", "number >= 0"),
    ("max_length a float", constrain("card_id", max_length=2.0), "card_id", "number >= 0"),
    ("unknown constraint", constrain("amount", minimum=0), "amount", "unknown constraint"),
    ("not_null not a bool", constrain("amount", not_null="yes"), "amount", "true or false"),
    ("constraints a list", constraints_as_list("amount"), "amount", "must be an object"),
    ("unknown block key", set_block(**{"event-time": "ts"}), None, "unknown key(s) event-time"),
    ("owner not a string", set_block(owner=["a"]), None, "owner must be a string"),
]


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"),
    [pytest.param(m, f, s, id=i) for i, m, f, s in INVALID],
)
def test_invalid_metadata_is_rejected_naming_the_field(
    mutate: Callable[[Schema], None], field: str | None, fragment: str
) -> None:
    schema = card_payment()
    mutate(schema)
    with pytest.raises(ContractError) as caught:
        parse_contract(schema)
    assert caught.value.field == field
    assert fragment in str(caught.value)
    if field is not None:
        assert f"'{field}'" in str(caught.value)


def test_misplaced_constraint_message_says_what_to_do() -> None:
    schema = card_payment()
    constrain("amount", pattern="^[A-Z]{3}$")(schema)
    with pytest.raises(ContractError) as caught:
        parse_contract(schema)
    assert str(caught.value) == (
        "field 'amount': constraint 'pattern' applies to strings, but the field is double; "
        "remove it or change the field type"
    )


def test_pii_must_be_a_bool() -> None:
    schema = card_payment()
    field_named(schema, "amount")["pii"] = "yes"
    with pytest.raises(ContractError, match="'pii' is 'yes'") as caught:
        parse_contract(schema)
    assert caught.value.field == "amount"


def test_featurestore_block_must_be_an_object() -> None:
    schema = card_payment()
    schema["featurestore"] = ["card_id"]
    with pytest.raises(ContractError, match="must be an object"):
        parse_contract(schema)


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        pytest.param('{"type": "record", "name": "X",', "not valid JSON", id="truncated JSON"),
        pytest.param("", "not valid JSON", id="empty text"),
        pytest.param(
            {"type": "record", "name": "X", "fields": [{"name": "a", "type": "strin"}]},
            "not a valid Avro schema",
            id="unknown type",
        ),
        pytest.param(
            {"type": "record", "name": "X", "fields": [{"name": "a"}]},
            "not a valid Avro schema",
            id="field without type",
        ),
        pytest.param(
            {"type": "record", "name": "X", "fields": [{"name": "a", "type": "int"}] * 2},
            "avro: Field name a already in use",
            id="duplicate field (fastavro accepts it)",
        ),
        pytest.param(
            {"type": "record", "name": "1X", "fields": [{"name": "a", "type": "int"}]},
            "avro: 1X is not a valid Avro name",
            id="bad name (fastavro accepts it)",
        ),
        pytest.param(
            {"type": "record", "name": "X"}, "non-empty fields", id="record without fields"
        ),
        pytest.param(
            {
                "type": "record",
                "name": "X",
                "fields": [{"name": "a", "type": "int", "default": "x"}],
            },
            "fastavro: Default value <x> must match",
            id="bad default (avro accepts it)",
        ),
        pytest.param({"type": "enum", "name": "E", "symbols": ["A", "A"]}, "", id="dup symbol"),
        pytest.param({"x": {1, 2}}, "cannot be written as JSON", id="not JSON-able"),
    ],
)
def test_malformed_avro_is_rejected(schema: Any, fragment: str) -> None:
    with pytest.raises(ContractError, match="fix") as caught:
        parse_contract(schema)
    assert fragment in str(caught.value)
    assert caught.value.field is None
    assert isinstance(caught.value, FeatureStoreError)

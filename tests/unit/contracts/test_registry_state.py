"""Unit tests for featurestore.contracts.registry.state: the registry as rebuilt from its log.

No Kafka and no HTTP: `SchemaTopic` stands in for the compacted ``_schemas`` topic. A
command's records are encoded as Kafka would store them, appended, decoded again and
applied, so the state only ever changes the way it does in production. `compacted`
simulates log compaction (the last value per key, tombstones dropped) and `replay`
rebuilds a fresh state from any list of records.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.contracts import CompatibilityLevel
from featurestore.contracts.registry.log import SchemaLog
from featurestore.contracts.registry.state import (
    Key,
    Outcome,
    RegistryState,
    SchemaVersion,
    Value,
    canonical_schema,
    encode,
    schema_guid,
)
from featurestore.errors import RegistryError

L = CompatibilityLevel
SCHEMAS = Path(__file__).parents[3] / "schemas"
V1, V2, V3 = (SCHEMAS.joinpath(f"card_payment.v{n}.avsc").read_text() for n in (1, 2, 3))

Encoded = tuple[bytes, bytes | None]


# --- the simulated topic ----------------------------------------------------------------


def decode(record: Encoded) -> tuple[Key, Value]:
    key, value = record
    return orjson.loads(key), None if value is None else orjson.loads(value)


class SchemaTopic:
    """A registry state and the log it was read from, in offset order."""

    def __init__(self, records: list[Encoded] | None = None) -> None:
        """A topic holding ``records``, and a state that has read them all."""
        self.records = list(records or [])
        self.state = replay(self.records)

    def append(self, outcome: Outcome) -> Any:
        """Append a command's records as Kafka stores them, apply them, return its answer."""
        for key, value in outcome.records:
            encoded_value = encode(value)
            encoded_key = encode(key)
            assert encoded_key is not None
            record = (encoded_key, encoded_value)
            self.records.append(record)
            self.state.apply(*decode(record))
        return outcome.response

    def register(self, subject: str, schema: str) -> dict[str, Any]:
        response: dict[str, Any] = self.append(self.state.register(subject, schema))
        return response


def compacted(records: list[Encoded]) -> list[Encoded]:
    """What compaction leaves: each key's last value at that value's offset, no tombstones."""
    last: dict[bytes, tuple[int, bytes | None]] = {}
    for offset, (key, value) in enumerate(records):
        last[key] = (offset, value)
    survivors = sorted(last.items(), key=lambda item: item[1][0])
    return [(key, value) for key, (_, value) in survivors if value is not None]


def replay(records: list[Encoded]) -> RegistryState:
    state = RegistryState()
    for record in records:
        state.apply(*decode(record))
    return state


# --- reading a state ----------------------------------------------------------------------

PROBE_SUBJECT = "probe-subject-never-registered"
PROBE_SCHEMA = json.dumps(
    {"type": "record", "name": "Probe", "fields": [{"name": "probe", "type": "boolean"}]}
)


def next_id(state: RegistryState) -> int:
    """The id the state would give a new schema (planning a command changes nothing)."""
    response: dict[str, Any] = state.register(PROBE_SUBJECT, PROBE_SCHEMA).response
    return int(response["id"])


def answer(read: Callable[..., Any], *args: Any) -> Any:
    """A read's value, or its error's status and code."""
    try:
        return read(*args)
    except RegistryError as exc:
        return ("error", exc.status, exc.code)


def snapshot(state: RegistryState) -> dict[str, Any]:
    """Every read the registry serves, for comparing two states."""
    reads: dict[str, Any] = {
        "subjects": state.subjects(),
        "subjects+deleted": state.subjects(deleted=True),
        "global": state.config(None),
        "next_id": next_id(state),
    }
    for subject in state.subjects(deleted=True):
        reads[f"{subject} versions"] = answer(state.versions, subject)
        reads[f"{subject} versions+deleted"] = state.versions(subject, deleted=True)
        reads[f"{subject} latest"] = answer(state.version, subject, "latest")
        for number in state.versions(subject, deleted=True):
            reads[f"{subject} v{number}"] = state.version(subject, number, deleted=True)
        reads[f"{subject} config"] = answer(state.config, subject)
        reads[f"{subject} level"] = state.level(subject)
    for schema_id in range(1, reads["next_id"]):
        text = answer(state.schema_by_id, schema_id)
        reads[f"id {schema_id}"] = text
        reads[f"id {schema_id} users"] = answer(state.id_users, schema_id, True)
        if isinstance(text, str):
            reads[f"id {schema_id} guid"] = state.schema_by_guid(schema_guid(text))
    reads["all_schemas"] = list(state.all_schemas())
    return reads


# --- schemas --------------------------------------------------------------------------


def record(name: str, *fields: dict[str, Any]) -> str:
    return json.dumps({"type": "record", "name": name, "fields": list(fields)})


A = {"name": "a", "type": "string"}
B_DEFAULT = {"name": "b", "type": "string", "default": "x"}
B_REQUIRED = {"name": "b", "type": "string"}
# A chain where each step is BACKWARD compatible with the one before, but the third
# cannot read the first's data: `b` lost its default.
CHAIN = (record("Chain", A), record("Chain", A, B_DEFAULT), record("Chain", A, B_REQUIRED))


def reformatted(schema: str) -> str:
    """The same schema with every object's attributes reversed and pretty-printed."""

    def reverse(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: reverse(node[key]) for key in reversed(node)}
        if isinstance(node, list):
            return [reverse(item) for item in node]
        return node

    return json.dumps(reverse(json.loads(schema)), indent=4)


def redocumented(schema: str) -> str:
    """A new schema (another id) that reads and accepts the same events."""
    return json.dumps({**json.loads(schema), "doc": "Edited documentation."})


def compact(schema: str) -> str:
    """An independent oracle for the served text: no whitespace, attribute order kept."""
    return json.dumps(json.loads(schema), separators=(",", ":"))


@contextmanager
def raises(code: int, status: int = 404) -> Iterator[None]:
    """Expect a RegistryError with this Confluent error code (and HTTP status)."""
    with pytest.raises(RegistryError) as info:
        yield
    assert (info.value.status, info.value.code) == (status, code), info.value


@pytest.fixture
def topic() -> SchemaTopic:
    return SchemaTopic()


# --- register: ids and versions ------------------------------------------------------


def test_first_registration_gets_id_1_and_version_1(topic: SchemaTopic) -> None:
    response = topic.register("payments-value", V1)

    assert (response["id"], response["version"]) == (1, 1)
    assert topic.state.versions("payments-value") == [1]
    assert topic.state.version("payments-value", 1).id == 1


def test_registering_the_same_schema_again_is_idempotent(topic: SchemaTopic) -> None:
    first = topic.register("payments-value", V1)

    again = topic.state.register("payments-value", V1)

    assert again.records == []
    assert again.response == first


def test_reformatted_schema_under_another_subject_shares_the_id(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    assert reformatted(V1) != V1
    assert canonical_schema(reformatted(V1)) == canonical_schema(V1)

    response = topic.register("other-value", reformatted(V1))

    assert (response["id"], response["version"]) == (1, 1)
    assert topic.state.id_users(1) == [
        topic.state.version("other-value", 1),
        topic.state.version("payments-value", 1),
    ]


def test_reformatted_schema_under_the_same_subject_is_idempotent(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)

    assert topic.state.register("payments-value", reformatted(V1)).records == []


def test_a_different_schema_gets_the_next_id(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)

    response = topic.register("payments-value", V2)

    assert (response["id"], response["version"]) == (2, 2)


def test_a_new_id_is_allocated_by_an_id_record(topic: SchemaTopic) -> None:
    outcome = topic.state.register("payments-value", V1)

    assert outcome.records[0] == ({"keytype": "ID", "magic": 0}, {"max_id": 1})
    topic.append(outcome)
    # The same schema under another subject reuses the id: no ID record.
    keytypes = [key["keytype"] for key, _ in topic.state.register("x", V1).records]
    assert keytypes == ["SCHEMA"]


def test_the_served_text_is_the_first_registered_text_compacted(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    topic.register("other-value", reformatted(V1))

    served = topic.state.schema_by_id(1)

    assert served == compact(V1)
    assert list(orjson.loads(served)) == list(json.loads(V1))  # attribute order kept
    assert topic.state.version("payments-value", 1).schema == compact(V1)


def test_every_subject_serves_the_ids_text(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    topic.register("other-value", reformatted(V1))

    assert topic.state.version("other-value", 1).schema == topic.state.schema_by_id(1)


@pytest.mark.parametrize("permanent", [False, True], ids=["soft-delete", "permanent-delete"])
def test_an_ids_text_survives_compaction(topic: SchemaTopic, permanent: bool) -> None:
    topic.register("payments-value", V1)
    topic.register("other-value", reformatted(V1))
    topic.append(topic.state.delete_subject("payments-value", permanent=False))
    if permanent:
        topic.append(topic.state.delete_subject("payments-value", permanent=True))
    assert topic.state.schema_by_id(1) == compact(V1)

    rebuilt = replay(compacted(topic.records))

    assert rebuilt.schema_by_id(1) == compact(V1)


# --- compatibility ------------------------------------------------------------------------


def test_backward_is_the_default_and_accepts_v2_after_v1(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)

    assert topic.state.config(None) is L.BACKWARD
    assert topic.register("payments-value", V2)["version"] == 2


def test_an_incompatible_schema_is_refused_with_409_naming_the_fields(
    topic: SchemaTopic,
) -> None:
    topic.register("payments-value", V1)
    topic.register("payments-value", V2)

    with pytest.raises(RegistryError) as info:
        topic.state.register("payments-value", V3)

    assert (info.value.status, info.value.code) == (409, 409)
    message = str(info.value)
    assert "payments-value" in message
    assert "'amount'" in message
    assert "'risk_score'" in message
    assert "version 2" in message


def test_a_refused_registration_appends_nothing(topic: SchemaTopic) -> None:
    topic.register("payments-value", V2)
    before = snapshot(topic.state)

    with raises(409, status=409):
        topic.state.register("payments-value", V3)

    assert snapshot(topic.state) == before


def test_subject_config_overrides_the_global_level(topic: SchemaTopic) -> None:
    topic.append(topic.state.set_config(None, "NONE"))
    topic.append(topic.state.set_config("strict-value", "BACKWARD"))
    for subject in ("strict-value", "loose-value"):
        topic.register(subject, V2)

    with raises(409, status=409):
        topic.state.register("strict-value", V3)
    assert topic.register("loose-value", V3)["version"] == 2


def test_subject_config_none_accepts_v3(topic: SchemaTopic) -> None:
    topic.register("payments-value", V2)

    assert topic.append(topic.state.set_config("payments-value", "NONE")) == {
        "compatibility": "NONE"
    }
    assert topic.state.level("payments-value") is L.NONE
    assert topic.state.level("other-value") is L.BACKWARD
    assert topic.register("payments-value", V3)["version"] == 2


def test_set_config_accepts_lower_case_levels(topic: SchemaTopic) -> None:
    topic.append(topic.state.set_config("payments-value", "full_transitive"))

    assert topic.state.config("payments-value") is L.FULL_TRANSITIVE


def test_the_chain_is_accepted_under_backward(topic: SchemaTopic) -> None:
    versions = [topic.register("chain-value", schema)["version"] for schema in CHAIN]

    assert versions == [1, 2, 3]


def test_the_chain_is_refused_under_backward_transitive(topic: SchemaTopic) -> None:
    topic.append(topic.state.set_config("chain-value", "BACKWARD_TRANSITIVE"))
    topic.register("chain-value", CHAIN[0])
    topic.register("chain-value", CHAIN[1])

    with pytest.raises(RegistryError) as info:
        topic.state.register("chain-value", CHAIN[2])

    assert info.value.code == 409
    assert "version 1" in str(info.value)
    assert "version 2" not in str(info.value)
    assert "'b'" in str(info.value)


def test_test_compatibility_returns_reasons_and_registers_nothing(topic: SchemaTopic) -> None:
    topic.register("payments-value", V2)
    before = snapshot(topic.state)

    reasons = topic.state.test_compatibility("payments-value", None, V3)

    assert reasons
    assert all(reason.startswith("incompatible with version 1") for reason in reasons)
    assert topic.state.test_compatibility("payments-value", "latest", V2) == []
    assert snapshot(topic.state) == before


def test_test_compatibility_of_an_unknown_subject_is_compatible(topic: SchemaTopic) -> None:
    assert topic.state.test_compatibility("nobody-value", None, V3) == []


def test_test_compatibility_against_a_version_ignores_transitive(topic: SchemaTopic) -> None:
    topic.append(topic.state.set_config("chain-value", "BACKWARD_TRANSITIVE"))
    topic.register("chain-value", CHAIN[0])
    topic.register("chain-value", CHAIN[1])
    state = topic.state

    assert state.test_compatibility("chain-value", None, CHAIN[2])  # against 1 and 2
    assert state.test_compatibility("chain-value", 2, CHAIN[2]) == []
    assert state.test_compatibility("chain-value", "latest", CHAIN[2]) == []
    reasons = state.test_compatibility("chain-value", 1, CHAIN[2])
    assert reasons
    assert all("version 1" in reason for reason in reasons)


def test_test_compatibility_against_an_unknown_version_is_40402(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)

    with raises(40402):
        topic.state.test_compatibility("payments-value", 7, V2)
    with raises(42202, status=422):
        topic.state.test_compatibility("payments-value", "abc", V2)


def test_compatibility_ignores_soft_deleted_versions(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    topic.register("payments-value", V2)
    topic.append(topic.state.delete_version("payments-value", 2, permanent=False))
    topic.append(topic.state.delete_version("payments-value", 1, permanent=False))

    assert topic.register("payments-value", V3)["version"] == 3


# --- invalid input ----------------------------------------------------------------------

NOT_JSON = '{"type": "record", "name": '
MISSING_ENTITY = json.dumps(
    {
        "type": "record",
        "name": "Payment",
        "featurestore": {"entity": ["card_id"]},
        "fields": [{"name": "amount", "type": "double"}],
    }
)
BAD_PATTERN = record(
    "Payment", {"name": "currency", "type": "string", "constraints": {"pattern": "[A-Z"}}
)


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        pytest.param(NOT_JSON, "not valid JSON", id="not-json"),
        pytest.param('{"type": "nosuchtype"}', "not a valid Avro schema", id="unknown-type"),
        pytest.param('{"type": "record", "name": "X"}', "fields", id="record-without-fields"),
        pytest.param(MISSING_ENTITY, "'card_id'", id="entity-field-missing"),
        pytest.param(BAD_PATTERN, "'currency'", id="pattern-does-not-compile"),
    ],
)
def test_an_invalid_schema_is_42201_naming_the_problem(
    topic: SchemaTopic, schema: str, named: str
) -> None:
    with pytest.raises(RegistryError) as info:
        topic.state.register("payments-value", schema)

    assert (info.value.status, info.value.code) == (422, 42201)
    assert named in str(info.value)


def test_test_compatibility_of_an_invalid_schema_is_42201(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)

    with raises(42201, status=422):
        topic.state.test_compatibility("payments-value", None, BAD_PATTERN)


def test_only_avro_schemas_are_registered(topic: SchemaTopic) -> None:
    with pytest.raises(RegistryError) as info:
        topic.state.register("payments-value", V1, schema_type="PROTOBUF")

    assert (info.value.status, info.value.code) == (422, 42201)
    assert "PROTOBUF" in str(info.value)
    assert topic.register("payments-value", V1) == topic.append(
        topic.state.register("payments-value", V1, schema_type="AVRO")
    )


def test_schema_references_are_refused(topic: SchemaTopic) -> None:
    reference = {"name": "Other", "subject": "other-value", "version": 1}

    with raises(42201, status=422):
        topic.state.register("payments-value", V1, references=[reference])
    assert topic.register("payments-value", V1)["id"] == 1  # references=None or []
    assert topic.state.register("payments-value", V1, references=[]).records == []


@pytest.mark.parametrize("level", ["BOGUS", "", None, 3, ["BACKWARD"], L])
def test_an_invalid_compatibility_level_is_42203(topic: SchemaTopic, level: object) -> None:
    with raises(42203, status=422):
        topic.state.set_config("payments-value", level)


@pytest.mark.parametrize("version", ["0", 0, "-2", -2, "abc", "1.5", "", 2**31, str(2**31)])
def test_an_invalid_version_is_42202(topic: SchemaTopic, version: str | int) -> None:
    topic.register("payments-value", V1)

    with raises(42202, status=422):
        topic.state.version("payments-value", version)


@pytest.mark.parametrize("version", ["latest", "LATEST", -1, "-1"])
def test_latest_and_minus_one_name_the_newest_version(
    topic: SchemaTopic, version: str | int
) -> None:
    topic.register("payments-value", V1)
    topic.register("payments-value", V2)

    assert topic.state.version("payments-value", version).version == 2


def test_the_largest_version_number_is_valid_but_unknown(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)

    with raises(40402):
        topic.state.version("payments-value", 2**31 - 1)


@pytest.mark.parametrize("version", ["0_2", " 2"])
def test_a_version_with_separators_or_spaces_is_42202(topic: SchemaTopic, version: str) -> None:
    topic.register("payments-value", V1)
    topic.register("payments-value", V2)

    with raises(42202, status=422):
        topic.state.version("payments-value", version)


def test_an_invalid_version_is_42202_even_for_an_unknown_subject(topic: SchemaTopic) -> None:
    with raises(42202, status=422):
        topic.state.version("nobody-value", "abc")


# --- reads ----------------------------------------------------------------------------


def test_reads_of_a_registered_subject(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    topic.register("payments-value", V2)
    topic.register("other-value", V1)
    state = topic.state

    assert state.subjects() == ["other-value", "payments-value"]
    assert state.versions("payments-value") == [1, 2]
    entry = state.version("payments-value", 2)
    assert entry == SchemaVersion("payments-value", 2, 2, compact(V2), deleted=False)
    assert entry.as_response() == {
        "subject": "payments-value",
        "version": 2,
        "id": 2,
        "guid": schema_guid(V2),
        "schema": compact(V2),
    }
    assert [v.subject for v in state.all_schemas()] == [
        "other-value",
        "payments-value",
        "payments-value",
    ]


def test_reads_with_and_without_soft_deleted_versions(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    topic.register("payments-value", V2)
    topic.register("gone-value", V1)
    topic.append(topic.state.delete_version("payments-value", 2, permanent=False))
    topic.append(topic.state.delete_subject("gone-value", permanent=False))
    state = topic.state

    assert state.subjects() == ["payments-value"]
    assert state.subjects(deleted=True) == ["gone-value", "payments-value"]
    assert state.versions("payments-value") == [1]
    assert state.versions("payments-value", deleted=True) == [1, 2]
    assert state.version("payments-value", "latest").version == 1
    assert state.version("payments-value", "latest", deleted=True).version == 2
    assert state.version("payments-value", 2, deleted=True).deleted
    with raises(40402):
        state.version("payments-value", 2)
    with raises(40401):
        state.versions("gone-value")
    assert state.versions("gone-value", deleted=True) == [1]
    assert [v.subject for v in state.all_schemas()] == ["payments-value"]


def test_schema_by_id_with_a_subject(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    topic.register("other-value", V2)

    assert topic.state.schema_by_id(1, subject="payments-value") == compact(V1)
    with raises(40403):
        topic.state.schema_by_id(1, subject="other-value")
    with raises(40403):
        topic.state.schema_by_id(1, subject="nobody-value")
    with raises(40403):
        topic.state.schema_by_id(3)


def test_id_users_lists_every_subject_version_using_the_id(topic: SchemaTopic) -> None:
    topic.register("b-value", V1)
    topic.register("a-value", V1)
    topic.register("c-value", V2)
    topic.append(topic.state.delete_subject("b-value", permanent=False))

    assert [(v.subject, v.version) for v in topic.state.id_users(1)] == [("a-value", 1)]
    assert [(v.subject, v.version) for v in topic.state.id_users(1, deleted=True)] == [
        ("a-value", 1),
        ("b-value", 1),
    ]
    with raises(40403):
        topic.state.id_users(3)


def test_schema_by_guid_round_trips(topic: SchemaTopic) -> None:
    guid = topic.register("payments-value", V1)["guid"]

    assert guid == schema_guid(reformatted(V1))
    assert topic.state.schema_by_guid(guid) == (1, compact(V1))
    with raises(40403):
        topic.state.schema_by_guid(schema_guid(V2))


def test_lookup_finds_a_reformatted_schema_under_its_subject(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    topic.register("other-value", V2)

    assert topic.state.lookup("payments-value", reformatted(V1)).version == 1
    with raises(40403):
        topic.state.lookup("payments-value", V2)
    with raises(40401):
        topic.state.lookup("nobody-value", V1)


def test_an_unknown_subject_is_40401(topic: SchemaTopic) -> None:
    with raises(40401):
        topic.state.versions("nobody-value")
    with raises(40401):
        topic.state.version("nobody-value", 1)
    with raises(40401):
        topic.state.delete_subject("nobody-value", permanent=False)


def test_an_unknown_version_is_40402(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)

    with raises(40402):
        topic.state.version("payments-value", 2)
    with raises(40402):
        topic.state.delete_version("payments-value", 2, permanent=False)


def test_config_without_a_subject_level_is_40408(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)

    with raises(40408):
        topic.state.config("payments-value")
    assert topic.state.config("payments-value", default_to_global=True) is L.BACKWARD
    topic.append(topic.state.set_config(None, "FULL"))
    assert topic.state.config(None) is L.FULL
    assert topic.state.config("payments-value", default_to_global=True) is L.FULL
    topic.append(topic.state.set_config("payments-value", "NONE"))
    assert topic.state.config("payments-value") is L.NONE


def test_delete_config_returns_the_previous_level(topic: SchemaTopic) -> None:
    topic.append(topic.state.set_config("payments-value", "FORWARD"))

    assert topic.append(topic.state.delete_config("payments-value")) == {
        "compatibilityLevel": "FORWARD"
    }
    with raises(40408):
        topic.state.config("payments-value")
    with raises(40408):
        topic.state.delete_config("payments-value")


# --- deletes --------------------------------------------------------------------------


def test_a_soft_deleted_version_is_hidden(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    topic.register("payments-value", V2)

    assert topic.append(topic.state.delete_version("payments-value", 2, permanent=False)) == 2

    assert topic.state.versions("payments-value") == [1]
    assert topic.state.versions("payments-value", deleted=True) == [1, 2]
    assert topic.state.schema_by_id(2) == compact(V2)  # the id still resolves


def test_version_numbers_continue_after_a_soft_delete(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    topic.register("payments-value", V2)
    topic.append(topic.state.delete_version("payments-value", 2, permanent=False))

    response = topic.register("payments-value", redocumented(V1))

    assert (response["id"], response["version"]) == (3, 3)


def test_re_registering_a_soft_deleted_schema_makes_a_new_version(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    topic.append(topic.state.delete_version("payments-value", 1, permanent=False))

    response = topic.register("payments-value", V1)

    assert (response["id"], response["version"]) == (1, 2)


def test_soft_deleting_a_version_twice_is_40406(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    topic.register("payments-value", V2)
    topic.append(topic.state.delete_version("payments-value", 2, permanent=False))

    with raises(40406):
        topic.state.delete_version("payments-value", 2, permanent=False)


def test_permanent_delete_of_a_live_version_is_40407(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)

    with raises(40407):
        topic.state.delete_version("payments-value", 1, permanent=True)


def test_permanent_delete_of_a_soft_deleted_version(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    topic.register("payments-value", V2)
    topic.append(topic.state.delete_version("payments-value", 2, permanent=False))

    outcome = topic.state.delete_version("payments-value", 2, permanent=True)

    assert outcome.records == [
        ({"keytype": "SCHEMA", "subject": "payments-value", "version": 2, "magic": 1}, None)
    ]
    assert topic.append(outcome) == 2
    assert topic.state.versions("payments-value", deleted=True) == [1]
    with raises(40403):
        topic.state.schema_by_id(2)


def test_permanent_delete_of_a_live_subject_is_40405(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)

    with raises(40405):
        topic.state.delete_subject("payments-value", permanent=True)


def test_soft_deleting_a_soft_deleted_subject_is_40404(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    topic.register("payments-value", V2)

    assert topic.append(topic.state.delete_subject("payments-value", permanent=False)) == [1, 2]

    with raises(40404):
        topic.state.delete_subject("payments-value", permanent=False)


def test_permanent_subject_delete_removes_its_config(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    topic.append(topic.state.set_config("payments-value", "NONE"))
    topic.append(topic.state.delete_subject("payments-value", permanent=False))

    assert topic.append(topic.state.delete_subject("payments-value", permanent=True)) == [1]

    assert topic.state.subjects(deleted=True) == []
    with raises(40408):
        topic.state.config("payments-value")
    with raises(40401):
        topic.state.versions("payments-value", deleted=True)


def test_a_permanently_deleted_subject_starts_again_at_version_1(topic: SchemaTopic) -> None:
    topic.register("payments-value", V2)
    topic.append(topic.state.delete_subject("payments-value", permanent=False))
    topic.append(topic.state.delete_subject("payments-value", permanent=True))

    response = topic.register("payments-value", V3)  # nothing left to be compatible with

    assert (response["id"], response["version"]) == (2, 1)


def test_permanent_delete_frees_an_id_only_when_nothing_uses_it(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    topic.register("payments-value", V2)
    topic.register("other-value", V1)
    topic.append(topic.state.delete_subject("payments-value", permanent=False))
    topic.append(topic.state.delete_subject("payments-value", permanent=True))

    with raises(40403):
        topic.state.schema_by_id(2)
    assert topic.state.schema_by_id(1) == compact(V1)
    assert [(v.subject, v.version) for v in topic.state.id_users(1)] == [("other-value", 1)]


# --- the log: compaction, replay, unknown records -------------------------------------


def test_compaction_keeps_the_last_value_per_key_and_drops_tombstones() -> None:
    records: list[Encoded] = [(b"k1", b"1"), (b"k2", b"2"), (b"k1", b"3"), (b"k2", None)]

    assert compacted(records) == [(b"k1", b"3")]


def test_ids_are_never_reused_after_compaction(topic: SchemaTopic) -> None:
    assert topic.register("a-value", CHAIN[0])["id"] == 1
    assert topic.register("b-value", CHAIN[2])["id"] == 2
    topic.append(topic.state.delete_subject("b-value", permanent=False))
    topic.append(topic.state.delete_subject("b-value", permanent=True))

    log = [decode(record) for record in compacted(topic.records)]
    assert not any(key.get("subject") == "b-value" for key, _ in log)
    assert ({"keytype": "ID", "magic": 0}, {"max_id": 2}) in log

    rebuilt = SchemaTopic(compacted(topic.records))

    assert rebuilt.register("c-value", V1)["id"] == 3


def test_a_state_rebuilt_from_the_compacted_log_answers_the_same(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    topic.register("payments-value", V2)
    topic.register("other-value", V1)
    topic.register("chain-value", CHAIN[0])
    topic.register("chain-value", CHAIN[1])
    topic.append(topic.state.set_config(None, "FULL"))
    topic.append(topic.state.set_config("other-value", "NONE"))
    topic.register("other-value", V3)
    topic.append(topic.state.delete_version("payments-value", 2, permanent=False))
    topic.append(topic.state.delete_subject("chain-value", permanent=False))
    topic.append(topic.state.delete_subject("chain-value", permanent=True))
    topic.append(topic.state.delete_version("other-value", 1, permanent=False))
    topic.append(topic.state.delete_version("other-value", 1, permanent=True))

    log = compacted(topic.records)

    assert len(log) < len(topic.records)
    assert snapshot(replay(log)) == snapshot(topic.state)


def test_replaying_the_same_log_gives_equal_states(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    topic.register("payments-value", V2)
    topic.append(topic.state.set_config("payments-value", "FORWARD"))
    topic.append(topic.state.delete_version("payments-value", 1, permanent=False))

    first, second = replay(topic.records), replay(topic.records)

    assert snapshot(first) == snapshot(second) == snapshot(topic.state)


def test_reading_the_log_again_from_the_start_changes_nothing(topic: SchemaTopic) -> None:
    topic.register("payments-value", V1)
    topic.register("payments-value", V2)
    topic.append(topic.state.delete_version("payments-value", 1, permanent=False))
    before = snapshot(topic.state)

    for record in topic.records:
        topic.state.apply(*decode(record))

    assert snapshot(topic.state) == before


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ({"keytype": "NOOP", "magic": 0}, None),
        ({"keytype": "DELETE_SUBJECT", "subject": "payments-value", "magic": 0}, {"x": 1}),
        ({"keytype": "FUTURE", "subject": "payments-value", "version": 1}, {"id": 99}),
        ({"magic": 0}, {"max_id": 99}),
        ({"keytype": "ID", "magic": 0}, None),
    ],
)
def test_apply_skips_records_it_does_not_know(topic: SchemaTopic, key: Key, value: Value) -> None:
    topic.register("payments-value", V1)
    before = snapshot(topic.state)

    topic.state.apply(key, value)

    assert snapshot(topic.state) == before


def read_from_topic(state: RegistryState, key: Key, value: Value) -> None:
    """What SchemaLog's tail thread does with one record it consumes (no Kafka involved)."""
    reader = SimpleNamespace(state=state, topic="_featurestore_schemas")
    SchemaLog._apply(reader, encode(key), encode(value), 7)  # type: ignore[arg-type]


def test_the_log_reader_skips_a_config_record_with_an_unknown_level(topic: SchemaTopic) -> None:
    key = {"keytype": "CONFIG", "subject": None, "magic": 0}

    read_from_topic(topic.state, key, {"compatibilityLevel": "MAYBE"})

    assert topic.state.config(None) is L.BACKWARD


def test_the_log_reader_skips_a_schema_record_whose_text_is_not_json(
    topic: SchemaTopic,
) -> None:
    key = {"keytype": "SCHEMA", "subject": "payments-value", "version": 1, "magic": 1}
    value = {"subject": "payments-value", "version": 1, "id": 5, "schema": "{", "deleted": False}

    read_from_topic(topic.state, key, value)

    assert topic.state.subjects(deleted=True) == []


def test_an_id_record_raises_the_next_id_without_a_schema(topic: SchemaTopic) -> None:
    topic.state.apply({"keytype": "ID", "magic": 0}, {"max_id": 41})

    assert topic.register("payments-value", V1)["id"] == 42


# --- random command sequences ---------------------------------------------------------

# The last entry is V1 reformatted: one schema, two texts, so one id must keep one text.
POOL = (
    *CHAIN,
    record("Chain", {"name": "a", "type": "int"}),
    V1,
    json.dumps(json.loads(V1), indent=4, sort_keys=True),
)
SUBJECTS = ("s1", "s2")
LEVELS = ("BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FULL", "NONE")

registers = st.tuples(st.just("register"), st.sampled_from(SUBJECTS), st.integers(0, len(POOL) - 1))
version_deletes = st.tuples(
    st.just("delete_version"),
    st.sampled_from(SUBJECTS),
    st.sampled_from([1, 2, 3, "latest"]),
    st.booleans(),
)
subject_deletes = st.tuples(st.just("delete_subject"), st.sampled_from(SUBJECTS), st.booleans())
configs = st.tuples(
    st.just("set_config"), st.sampled_from((None, *SUBJECTS)), st.sampled_from(LEVELS)
)
commands = st.lists(
    st.one_of(registers, registers, version_deletes, subject_deletes, configs),
    min_size=5,
    max_size=30,
)


def plan(state: RegistryState, command: tuple[Any, ...]) -> Outcome:
    name, *args = command
    if name == "register":
        subject, index = args
        return state.register(subject, POOL[index])
    if name == "delete_version":
        return state.delete_version(*args)
    if name == "delete_subject":
        return state.delete_subject(*args)
    return state.set_config(*args)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands=commands)
def test_random_commands_keep_the_invariants(commands: list[tuple[Any, ...]]) -> None:
    """Random command sequences, including two texts of one schema, keep the invariants."""
    topic = SchemaTopic()
    highest = 0
    for command in commands:
        try:
            topic.append(plan(topic.state, command))
        except RegistryError:
            continue
        max_id = next_id(topic.state) - 1
        assert max_id >= highest, f"the max id fell from {highest} to {max_id} at {command}"
        highest = max_id
    state = topic.state

    every = [
        state.version(subject, number, deleted=True)
        for subject in state.subjects(deleted=True)
        for number in state.versions(subject, deleted=True)
    ]
    for entry in every:
        assert canonical_schema(state.schema_by_id(entry.id)) == canonical_schema(entry.schema)
        if not entry.deleted:
            assert entry in state.id_users(entry.id)
    ids_of: dict[str, set[int]] = {}
    for entry in every:
        ids_of.setdefault(canonical_schema(entry.schema), set()).add(entry.id)
    assert all(len(ids) == 1 for ids in ids_of.values()), f"a schema has two ids: {ids_of}"
    all_ids = [schema_id for ids in ids_of.values() for schema_id in ids]
    assert len(set(all_ids)) == len(all_ids), f"an id names two schemas: {ids_of}"

    live = snapshot(state)
    assert snapshot(replay(compacted(topic.records))) == live
    assert snapshot(replay(topic.records)) == live

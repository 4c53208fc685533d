"""Property-based fuzzing of the live registry (real Kafka behind it) from its own
OpenAPI document with schemathesis, plus a grammar-based fuzz of the schema text that
schemathesis only ever fills with arbitrary strings: no request may get a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from confluent_kafka.schema_registry import Schema
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from featurestore.contracts.registry import RegistryAuth, RegistryState, create_app
from tests.conftest import Services
from tests.integration.registry.conftest import RunningRegistry, delete_topics, fresh_topic

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).parents[3] / "schemas"
MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
SEED_SUBJECT = "card_payment-value"
NONE_SUBJECT = "anything-goes-value"
KNOWN_BUG = frozenset({400, 404, 405})


@pytest.fixture(scope="module")
def fuzzed_registry(services: Services) -> Iterator[RunningRegistry]:
    """A registry of the module's own, seeded with the card_payment contracts."""
    registry = RunningRegistry(services.kafka_bootstrap, fresh_topic("fuzz"))
    registry.start()
    client = registry.client()
    for version in (1, 2):
        text = (SCHEMAS / f"card_payment.v{version}.avsc").read_text()
        client.register_schema(SEED_SUBJECT, Schema(text, "AVRO"))
    client.set_compatibility(NONE_SUBJECT, "NONE")
    yield registry
    registry.stop()
    delete_topics(services, [registry.topic])


def _openapi() -> dict[str, Any]:
    """The registry's OpenAPI document, as every instance serves it at /openapi.json.

    Loaded at import time so that each operation is a test item of its own; the requests
    go to the live instance (test_fuzzed_document_is_the_served_one checks it is the same
    document). ``schemathesis.pytest.from_fixture`` would load it from the live URL, but
    its lazy loader does not run under this pytest (no ``Function._nodeid``)."""
    document: dict[str, Any] = create_app(RegistryState(), None, RegistryAuth()).openapi()
    return document


api = schemathesis.openapi.from_dict(_openapi())


def test_fuzzed_document_is_the_served_one(fuzzed_registry: RunningRegistry) -> None:
    served = httpx.get(f"{fuzzed_registry.url}/openapi.json")
    assert served.status_code == 200
    assert served.json() == json.loads(json.dumps(_openapi()))


def registry_error_shape(
    ctx: Any, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> None:
    """Every 4xx is the registry's: its media type and {"error_code": int, "message": str}."""
    if not 400 <= response.status_code < 500:
        return
    body = json.loads(response.content)
    if isinstance(body, dict) and set(body) == {"detail"} and response.status_code in KNOWN_BUG:
        # FastAPI's own errors (an undeclared method, a subject with "/" that matches no
        # route, a body that is not UTF-8) keep FastAPI's shape: the known bug that
        # test_bad_input.py::test_framework_errors_get_registry_errors keeps.
        return
    assert response.headers.get("content-type", [""])[0] == MEDIA_TYPE, response.headers
    assert isinstance(body, dict), body
    assert set(body) == {"error_code", "message"}, body
    assert type(body["error_code"]) is int, body
    assert isinstance(body["message"], str), body


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
@api.parametrize()
def test_no_operation_answers_a_server_error(
    case: schemathesis.Case[Any], fuzzed_registry: RunningRegistry
) -> None:
    response = case.call(base_url=fuzzed_registry.url, timeout=60)
    case.validate_response(response, checks=[not_a_server_error, registry_error_shape])


# --- the schema text itself ----------------------------------------------------------
# schemathesis fills "schema" with arbitrary strings, which almost never parse. These
# strategies write Avro-shaped schemas (valid and subtly invalid) with contract metadata,
# so the parsers, the contract validation and the compatibility checker get fuzzed too.

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=5,
)
PRIMITIVES = st.sampled_from(
    ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]
)
LOGICAL = st.sampled_from(
    [
        {"type": "long", "logicalType": "timestamp-millis"},
        {"type": "long", "logicalType": "timestamp-micros"},
        {"type": "int", "logicalType": "date"},
        {"type": "string", "logicalType": "uuid"},
        {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2},
        {"type": "long", "logicalType": "no-such-type"},
    ]
)
CONSTRAINTS = st.dictionaries(
    st.sampled_from(["not_null", "min", "max", "one_of", "pattern", "max_length", "maxlen"]),
    JSON_VALUES | st.sampled_from(["^[A-Z]{3}$", "[", 0, 10, ["A", "B"], [1, 2], True]),
    max_size=3,
)


def _fields(children: st.SearchStrategy[Any]) -> st.SearchStrategy[list[dict[str, Any]]]:
    field = st.fixed_dictionaries(
        {"name": NAMES, "type": children},
        optional={"default": JSON_VALUES, "constraints": CONSTRAINTS, "pii": st.booleans()},
    )
    return st.lists(field, max_size=4, unique_by=lambda f: f["name"])


def _composites(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(lambda items: {"type": "array", "items": items}, children),
        st.builds(lambda values: {"type": "map", "values": values}, children),
        st.lists(children, min_size=1, max_size=3),  # a union
        st.builds(
            lambda name, fields: {"type": "record", "name": name, "fields": fields},
            NAMES,
            _fields(children),
        ),
        st.builds(
            lambda name, symbols: {"type": "enum", "name": name, "symbols": symbols},
            NAMES,
            st.lists(NAMES, min_size=1, max_size=4),
        ),
        st.builds(
            lambda name, size: {"type": "fixed", "name": name, "size": size},
            NAMES,
            st.integers(-1, 16),
        ),
    )


TYPES = st.recursive(PRIMITIVES | LOGICAL, _composites, max_leaves=8)
BLOCKS = st.fixed_dictionaries(
    {},
    optional={
        "entity": st.sampled_from([["id"], "id", [], ["id", "id"], ["nope"], 5]),
        "event_time": st.sampled_from(["ts", "id", "nope", 3]),
        "owner": st.sampled_from(["team@example.com", 7]),
        "max_future_skew": st.sampled_from(["5m", "1x", -1, 250]),
        "max_age": st.sampled_from(["7d", "", 1000]),
        "unknown": JSON_VALUES,
    },
)
ID_FIELDS = st.sampled_from(
    [
        [{"name": "id", "type": "string"}],
        [{"name": "id", "type": ["null", "string"]}],
        [
            {"name": "id", "type": "string"},
            {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        ],
        [],
    ]
)
CONTRACTS = st.builds(
    lambda name, head, rest, block: {
        "type": "record",
        "name": name,
        "fields": head + [f for f in rest if f["name"] not in ("id", "ts")],
        **({"featurestore": block} if block is not None else {}),
    },
    NAMES,
    ID_FIELDS,
    _fields(TYPES),
    st.none() | BLOCKS,
)
SCHEMA_TEXTS = st.one_of(CONTRACTS, TYPES).map(json.dumps)


def assert_definite(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.request.url}: {response.text}"
    if response.status_code >= 400:
        assert response.headers["content-type"] == MEDIA_TYPE, response.text
        body = response.json()
        assert type(body["error_code"]) is int, body
        assert isinstance(body["message"], str), body


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
@given(text=SCHEMA_TEXTS)
def test_generated_schemas_get_definite_answers(
    fuzzed_registry: RunningRegistry, text: str
) -> None:
    body = {"schema": text}
    with httpx.Client(base_url=fuzzed_registry.url, timeout=60) as http:
        assert_definite(
            http.post(f"/compatibility/subjects/{SEED_SUBJECT}/versions?verbose=true", json=body)
        )
        assert_definite(
            http.post(f"/compatibility/subjects/{SEED_SUBJECT}/versions/1?verbose=true", json=body)
        )
        assert_definite(http.post(f"/subjects/{SEED_SUBJECT}", json=body))
        # Registered under one subject, so each schema also meets the earlier ones.
        assert_definite(registered := http.post("/subjects/generated-value/versions", json=body))
        event(f"register under BACKWARD: {registered.status_code}")
        # And under NONE, where every valid schema is written to Kafka and read back.
        assert_definite(written := http.post(f"/subjects/{NONE_SUBJECT}/versions", json=body))
        event(f"register under NONE: {written.status_code}")
        if written.status_code == 200:
            schema_id = written.json()["id"]
            assert (
                http.get(f"/schemas/ids/{schema_id}").json()["schema"] == written.json()["schema"]
            )
            assert http.get(f"/schemas/ids/{schema_id}/schema").status_code == 200
            found = http.post(f"/subjects/{NONE_SUBJECT}", json=body)
            assert found.status_code == 200, found.text
            assert found.json()["id"] == schema_id

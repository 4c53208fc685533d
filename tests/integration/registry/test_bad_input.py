"""Bad input gets a definite Confluent-style answer, never a 500: the registry's media
type and a JSON body ``{"error_code": int, "message": str}`` with Confluent's codes
(42201 invalid schema, 42202 invalid version, 42203 invalid compatibility level, 40401
subject / 40402 version / 40403 schema not found), through raw HTTP and the stock client.
And the registry keeps serving after the worst of it."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference
from confluent_kafka.schema_registry.error import SchemaRegistryError

from tests.conftest import Services
from tests.integration.registry.conftest import RunningRegistry, delete_topics, fresh_topic

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).parents[3] / "schemas"
MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
V1 = (SCHEMAS / "card_payment.v1.avsc").read_text()
KNOWN = "known-value"  # holds V1 as version 1 in the shared registry


@pytest.fixture(scope="module")
def shared(services: Services) -> Iterator[RunningRegistry]:
    """One registry for the module; KNOWN holds V1. Tests here add subjects of their own."""
    registry = RunningRegistry(services.kafka_bootstrap, fresh_topic("bad-input"))
    registry.start()
    registry.client().register_schema(KNOWN, Schema(V1, "AVRO"))
    yield registry
    registry.stop()
    delete_topics(services, [registry.topic])


@pytest.fixture
def quiet_server_errors() -> Iterator[None]:
    """Keep uvicorn from logging the traceback of an unhandled exception (a 500).

    Python 3.11 places a traceback's ^^^ markers with ast.parse, whose recursion-depth
    counter is interpreter state, not per thread: the server thread formatting its 500
    while pytest formats the expected failure in the main thread crashed this session
    with INTERNALERROR "SystemError: AST constructor recursion depth mismatch" (see
    python/cpython#106905, pytest-dev/pytest#10763).
    """
    logger = logging.getLogger("uvicorn.error")
    was = logger.disabled
    logger.disabled = True
    yield
    logger.disabled = was


@pytest.fixture
def http(shared: RunningRegistry) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared.url, timeout=60) as client:
        yield client


def assert_error(response: httpx.Response, status: int, code: int, naming: str = "") -> str:
    """The response is a registry error; its message, which names ``naming``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == MEDIA_TYPE
    body = response.json()
    assert set(body) == {"error_code", "message"}, body
    assert type(body["error_code"]) is int, body
    assert body["error_code"] == code, body
    assert isinstance(body["message"], str), body
    assert body["message"], body
    assert naming in body["message"], body["message"]
    message: str = body["message"]
    return message


def assert_serves(url: str) -> None:
    """Reads and writes still work on the registry at ``url``."""
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/subjects").status_code == 200
        subject = f"alive-{uuid.uuid4().hex[:8]}"
        written = client.post(f"/subjects/{subject}/versions", json={"schema": V1})
        assert written.status_code == 200, written.text
        assert client.get(f"/subjects/{subject}/versions").json() == [1]


CARD = {"name": "card_id", "type": "string"}
TS = {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}}


def contract(
    *extra: dict[str, Any],
    card: dict[str, Any] = CARD,
    ts: dict[str, Any] = TS,
    block: dict[str, Any] | None = None,
) -> str:
    """A contract keyed by card_id with event time ts, plus ``extra`` fields."""
    return json.dumps(
        {
            "type": "record",
            "name": "Payment",
            "namespace": "com.example.bad",
            "featurestore": block or {"entity": ["card_id"], "event_time": "ts"},
            "fields": [card, *extra, ts],
        }
    )


# (case id, schema, the field the message must name)
CONTRACT_ERRORS = [
    (
        "entity_field_missing",
        contract(block={"entity": ["card_number"], "event_time": "ts"}),
        "'card_number'",
    ),
    (
        "entity_nullable",
        contract(card={"name": "card_id", "type": ["null", "string"]}),
        "'card_id'",
    ),
    ("event_time_not_a_timestamp", contract(ts={"name": "ts", "type": "long"}), "'ts'"),
    ("event_time_a_string", contract(ts={"name": "ts", "type": "string"}), "'ts'"),
    (
        "event_time_missing",
        contract(block={"entity": ["card_id"], "event_time": "when"}),
        "'when'",
    ),
    (
        "min_on_a_string",
        contract({"name": "currency", "type": "string", "constraints": {"min": 0}}),
        "'currency'",
    ),
    (
        "pattern_does_not_compile",
        contract({"name": "currency", "type": "string", "constraints": {"pattern": "^[A-Z{3"}}),
        "'currency'",
    ),
    (
        "one_of_strings_on_an_int",
        contract({"name": "qty", "type": "int", "constraints": {"one_of": ["one", "two"]}}),
        "'qty'",
    ),
    (
        "one_of_numbers_on_a_string",
        contract({"name": "currency", "type": "string", "constraints": {"one_of": [1, 2]}}),
        "'currency'",
    ),
    (
        "one_of_not_an_enum_symbol",
        contract(
            {
                "name": "channel",
                "type": {"type": "enum", "name": "Channel", "symbols": ["POS", "ATM"]},
                "constraints": {"one_of": ["POS", "MOTO"]},
            }
        ),
        "'channel'",
    ),
    (
        "unknown_constraint_key",
        contract({"name": "currency", "type": "string", "constraints": {"maxlen": 3}}),
        "'currency'",
    ),
    (
        "min_above_max",
        contract({"name": "amount", "type": "double", "constraints": {"min": 5, "max": 1}}),
        "'amount'",
    ),
]


# --- the request body ----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"schema": ', b"", b"\xff\xfe", b"[1, 2]", b'"schema"', b"null"],
    ids=["broken", "truncated", "empty", "utf16_bom", "array", "string", "null"],
)
def test_malformed_body_is_a_client_error(http: httpx.Client, body: bytes) -> None:
    for path in (
        "/subjects/s/versions",
        "/subjects/s",
        "/compatibility/subjects/s/versions",
        "/compatibility/subjects/s/versions/latest",
    ):
        answer = http.post(path, content=body, headers={"content-type": "application/json"})
        assert_error(answer, 422, 422)


def test_body_without_schema_is_422(http: httpx.Client) -> None:
    for body in ({}, {"schemaType": "AVRO"}, {"scheme": V1}):
        message = assert_error(http.post("/subjects/s/versions", json=body), 422, 422)
        assert "schema" in message
    assert_error(http.post("/subjects/s/versions", json={"schema": 5}), 422, 422, "schema")
    assert_error(http.post("/subjects/s/versions", json={"schema": None}), 422, 422, "schema")


@pytest.mark.parametrize("text", ["not json", "{", "", "{'type': 'string'}", "[1,"])
def test_schema_that_is_not_json_is_42201(shared: RunningRegistry, text: str) -> None:
    with httpx.Client(base_url=shared.url) as http:
        for path in ("/subjects/s/versions", "/compatibility/subjects/s/versions"):
            assert_error(http.post(path, json={"schema": text}), 422, 42201, "JSON")
    with pytest.raises(SchemaRegistryError) as refused:
        shared.client().register_schema("s", Schema(text, "AVRO"))
    assert (refused.value.http_status_code, refused.value.error_code) == (422, 42201)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "recrod", "name": "R", "fields": []},
        {"type": "recrod"},
        {"type": "record", "fields": []},  # no name
        {"type": "record", "name": "R"},  # no fields
        {"type": "record", "name": "R", "fields": [{"name": "a", "type": "integer"}]},
        {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "default": "x"}]},
        {"type": "enum", "name": "E", "symbols": ["A", "A"]},
        {"type": "fixed", "name": "F", "size": -1},
        {"type": "array"},
        42,
        None,
    ],
    ids=lambda s: json.dumps(s)[:40],
)
def test_valid_json_that_is_not_avro_is_42201(http: httpx.Client, schema: object) -> None:
    text = json.dumps(schema)
    assert_error(http.post("/subjects/s/versions", json={"schema": text}), 422, 42201)
    assert_error(http.post("/compatibility/subjects/s/versions", json={"schema": text}), 422, 42201)


@pytest.mark.parametrize(
    ("case", "schema", "field"), CONTRACT_ERRORS, ids=[c[0] for c in CONTRACT_ERRORS]
)
def test_contract_errors_are_42201_naming_the_field(
    shared: RunningRegistry, case: str, schema: str, field: str
) -> None:
    with httpx.Client(base_url=shared.url) as http:
        assert_error(
            http.post(f"/subjects/{case}/versions", json={"schema": schema}), 422, 42201, field
        )
        # The compatibility test validates the contract the same way.
        answer = http.post(f"/compatibility/subjects/{KNOWN}/versions", json={"schema": schema})
        assert_error(answer, 422, 42201, field)
    with pytest.raises(SchemaRegistryError) as refused:
        shared.client().register_schema(case, Schema(schema, "AVRO"))
    assert (refused.value.http_status_code, refused.value.error_code) == (422, 42201)
    assert field in refused.value.error_message
    assert case not in shared.client().get_subjects()


def test_other_schema_types_and_references_are_42201(
    shared: RunningRegistry, http: httpx.Client
) -> None:
    proto = 'syntax = "proto3"; message M { string a = 1; }'
    for schema_type, text in (("PROTOBUF", proto), ("JSON", '{"type": "object"}')):
        answer = http.post("/subjects/s/versions", json={"schema": text, "schemaType": schema_type})
        assert_error(answer, 422, 42201, schema_type)
        with pytest.raises(SchemaRegistryError) as refused:
            shared.client().register_schema("s", Schema(text, schema_type))
        assert (refused.value.http_status_code, refused.value.error_code) == (422, 42201)

    reference = {"name": "com.example.Other", "subject": KNOWN, "version": 1}
    answer = http.post("/subjects/s/versions", json={"schema": V1, "references": [reference]})
    assert_error(answer, 422, 42201, "reference")
    with pytest.raises(SchemaRegistryError) as refused:
        shared.client().register_schema(
            "s", Schema(V1, "AVRO", [SchemaReference("com.example.Other", KNOWN, 1)])
        )
    assert (refused.value.http_status_code, refused.value.error_code) == (422, 42201)
    # An empty list of references is no reference.
    assert (
        http.post("/subjects/refs/versions", json={"schema": V1, "references": []}).status_code
        == 200
    )
    assert "s" not in shared.client().get_subjects()


# --- config and versions -------------------------------------------------------------


@pytest.mark.parametrize("level", ["SOMETIMES", "", "BACKWARDS", "FULL TRANSITIVE", None])
def test_invalid_compatibility_level_is_42203(
    shared: RunningRegistry, http: httpx.Client, level: str | None
) -> None:
    for path in ("/config", f"/config/{KNOWN}", "/config/never-registered"):
        assert_error(http.put(path, json={"compatibility": level}), 422, 42203)
    if level:
        with pytest.raises(SchemaRegistryError) as refused:
            shared.client().set_compatibility(KNOWN, level)
        assert (refused.value.http_status_code, refused.value.error_code) == (422, 42203)
    assert http.get("/config").json() == {"compatibilityLevel": "BACKWARD"}
    assert_error(http.get(f"/config/{KNOWN}"), 404, 40408)  # nothing was set


@pytest.mark.parametrize(
    "version", ["0", "abc", "-2", "2147483648", "1.5", "%20", "latest1", "99999999999999999999"]
)
def test_invalid_version_is_42202(
    shared: RunningRegistry, http: httpx.Client, version: str
) -> None:
    assert_error(http.get(f"/subjects/{KNOWN}/versions/{version}"), 422, 42202)
    assert_error(http.get(f"/subjects/{KNOWN}/versions/{version}/schema"), 422, 42202)
    assert_error(http.delete(f"/subjects/{KNOWN}/versions/{version}"), 422, 42202)
    answer = http.post(f"/compatibility/subjects/{KNOWN}/versions/{version}", json={"schema": V1})
    assert_error(answer, 422, 42202)
    assert http.get(f"/subjects/{KNOWN}/versions").json() == [1]


def test_invalid_version_through_the_stock_client(shared: RunningRegistry) -> None:
    for version in (0, -2, 2**31):
        with pytest.raises(SchemaRegistryError) as refused:
            shared.client().get_version(KNOWN, version)
        assert (refused.value.http_status_code, refused.value.error_code) == (422, 42202)
        with pytest.raises(SchemaRegistryError) as refused:
            shared.client().delete_version(KNOWN, version)
        assert refused.value.error_code == 42202


@pytest.mark.parametrize("version", ["0_1", "%201", "1%20", "%D9%A1"])
def test_version_in_python_only_int_syntax_is_42202(http: httpx.Client, version: str) -> None:
    """Python's int() takes "0_1", " 1" and Arabic-Indic digits: none is a version."""
    assert_error(http.get(f"/subjects/{KNOWN}/versions/{version}"), 422, 42202)


# --- not found -----------------------------------------------------------------------


def test_unknown_subject_is_40401(shared: RunningRegistry, http: httpx.Client) -> None:
    for answer in (
        http.get("/subjects/nope/versions"),
        http.get("/subjects/nope/versions/latest"),
        http.get("/subjects/nope/versions/1"),
        http.get("/subjects/nope/versions/1/schema"),
        http.get("/subjects/nope/versions/1/referencedby"),
        http.delete("/subjects/nope"),
        http.delete("/subjects/nope/versions/1"),
        http.post("/subjects/nope", json={"schema": V1}),
        http.post("/compatibility/subjects/nope/versions/latest", json={"schema": V1}),
    ):
        assert_error(answer, 404, 40401, "nope")
    client = shared.client()
    calls: list[Callable[[], object]] = [
        lambda: client.get_latest_version("nope"),
        lambda: client.get_versions("nope"),
        lambda: client.lookup_schema("nope", Schema(V1, "AVRO")),
        lambda: client.delete_subject("nope"),
    ]
    for call in calls:
        with pytest.raises(SchemaRegistryError) as missing:
            call()
        assert (missing.value.http_status_code, missing.value.error_code) == (404, 40401)


def test_unknown_version_is_40402(shared: RunningRegistry, http: httpx.Client) -> None:
    for answer in (
        http.get(f"/subjects/{KNOWN}/versions/2"),
        http.get(f"/subjects/{KNOWN}/versions/2147483647/schema"),
        http.delete(f"/subjects/{KNOWN}/versions/99"),
        http.post(f"/compatibility/subjects/{KNOWN}/versions/7", json={"schema": V1}),
    ):
        assert_error(answer, 404, 40402)
    with pytest.raises(SchemaRegistryError) as missing:
        shared.client().get_version(KNOWN, 42)
    assert (missing.value.http_status_code, missing.value.error_code) == (404, 40402)


def test_unknown_id_is_40403(shared: RunningRegistry, http: httpx.Client) -> None:
    for schema_id in ("999999", "0", "-1", "99999999999999999999999"):
        for suffix in ("", "/schema", "/subjects", "/versions"):
            assert_error(http.get(f"/schemas/ids/{schema_id}{suffix}"), 404, 40403)
    assert_error(http.get("/schemas/guids/not-a-guid"), 404, 40403)
    # A schema the subject does not hold.
    other = json.dumps({"type": "record", "name": "Other", "fields": []})
    assert_error(http.post(f"/subjects/{KNOWN}", json={"schema": other}), 404, 40403)
    with pytest.raises(SchemaRegistryError) as missing:
        shared.client().get_schema(987654)
    assert (missing.value.http_status_code, missing.value.error_code) == (404, 40403)
    with pytest.raises(SchemaRegistryError) as missing:
        shared.client().lookup_schema(KNOWN, Schema(other, "AVRO"))
    assert missing.value.error_code == 40403
    # Not a number: a validation error, still in the registry's shape.
    assert_error(http.get("/schemas/ids/abc"), 422, 422)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/no/such/path", None),
        ("GET", "/subjects/a%2Fb/versions", None),  # how the stock client sends "a/b"
        ("PATCH", "/subjects", None),
        ("PUT", "/mode", b'{"mode": "READONLY"}'),  # stock client update_global_mode
        ("POST", "/subjects/s/versions", b'{"schema": "\xe9t\xe9"}'),  # Latin-1, not UTF-8
    ],
    ids=["unrouted_path", "subject_with_slash", "undeclared_method", "mode_write", "not_utf8"],
)
def test_framework_errors_get_registry_errors(
    http: httpx.Client, method: str, path: str, body: bytes | None
) -> None:
    answer = http.request(method, path, content=body, headers={"content-type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.headers["content-type"] == MEDIA_TYPE, answer.text
    assert {"error_code", "message"} <= set(answer.json()), answer.text


# --- size and depth ------------------------------------------------------------------


def _nested_records(depth: int, leaf: str = "int") -> str:
    """Records nested ``depth`` deep (three JSON levels each), written out as text."""
    head = "".join(
        f'{{"type":"record","name":"Level{i}","fields":[{{"name":"x","type":' for i in range(depth)
    )
    return head + json.dumps(leaf) + "}]}" * depth


def test_huge_schema_gets_a_definite_answer(shared: RunningRegistry, http: httpx.Client) -> None:
    fields = [{"name": f"f{i}", "type": "int"} for i in range(5000)]
    huge = json.dumps({"type": "record", "name": "Huge", "fields": fields})
    written = http.post("/subjects/huge/versions", json={"schema": huge})
    assert written.status_code in (200, 422), written.text
    if written.status_code == 200:
        assert (
            len(json.loads(http.get("/subjects/huge/versions/latest/schema").text)["fields"])
            == 5000
        )
        wider = huge.replace('"int"', '"long"')
        answer = http.post(
            "/compatibility/subjects/huge/versions?verbose=true", json={"schema": wider}
        )
        assert answer.status_code == 200
        assert answer.json()["is_compatible"] is True
    assert_serves(shared.url)


def test_moderately_nested_records_register(http: httpx.Client) -> None:
    written = http.post("/subjects/nested-60/versions", json={"schema": _nested_records(60)})
    assert written.status_code == 200, written.text
    answer = http.post(
        "/compatibility/subjects/nested-60/versions?verbose=true",
        json={"schema": _nested_records(60, "string")},
    )
    assert answer.json()["is_compatible"] is False
    assert answer.json()["messages"]


@pytest.mark.parametrize(
    "path", ["/subjects/deep/versions", "/subjects/deep", "/compatibility/subjects/deep/versions"]
)
@pytest.mark.usefixtures("quiet_server_errors")
def test_deeply_nested_records_get_a_definite_answer(http: httpx.Client, path: str) -> None:
    answer = http.post(path, json={"schema": _nested_records(200)})
    assert answer.status_code in (200, 404, 422), answer.text
    assert answer.headers["content-type"] == MEDIA_TYPE


@pytest.mark.usefixtures("quiet_server_errors")
def test_registry_serves_after_deeply_nested_input(shared: RunningRegistry) -> None:
    for depth in (85, 200, 400, 2000):
        for path in (
            "/subjects/deep/versions",
            "/subjects/deep",
            "/compatibility/subjects/deep/versions",
        ):
            with httpx.Client(base_url=shared.url, timeout=60) as client:
                client.post(path, json={"schema": _nested_records(depth)})
    assert_serves(shared.url)


def test_schema_too_large_for_kafka_is_a_client_error(
    services: Services, start_registry: Callable[..., RunningRegistry]
) -> None:
    registry = start_registry(topic=fresh_topic("too-large"))
    too_large = json.dumps({"type": "record", "name": "Big", "doc": "x" * 1_100_000, "fields": []})
    answer = httpx.post(
        f"{registry.url}/subjects/big/versions", json={"schema": too_large}, timeout=60
    )
    assert 400 <= answer.status_code < 500, answer.text


def test_writes_keep_working_after_a_schema_too_large_for_kafka(
    services: Services, start_registry: Callable[..., RunningRegistry]
) -> None:
    registry = start_registry(topic=fresh_topic("too-large"))
    too_large = json.dumps({"type": "record", "name": "Big", "doc": "x" * 1_100_000, "fields": []})
    httpx.post(f"{registry.url}/subjects/big/versions", json={"schema": too_large}, timeout=60)
    assert httpx.get(f"{registry.url}/subjects").status_code == 200  # reads are fine
    assert_serves(registry.url)

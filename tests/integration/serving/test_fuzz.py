"""Fuzzing the live feature server (real Redis behind it): schemathesis from its own
OpenAPI document, and entity rows hypothesis writes to be awkward (mixed types, nulls,
unicode, huge strings, numbers where text is stored). No request may get a 5xx; every
200 has a value, a status and a freshness per entity row."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from featurestore.serving.server import ServerOptions, create_app
from tests.conftest import Services
from tests.integration.serving.conftest import REFS, Served, running, serve_fixture
from tests.integration.serving.test_server import app_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, services: Services) -> Iterator[str]:
    prefix = f"test:fuzz-{uuid.uuid4().hex[:8]}:"
    served: Served = serve_fixture(tmp_path_factory.mktemp("fuzz"), prefix, services.redis_url)
    try:
        with running(app_for(served, ServerOptions(max_entities=100))) as url:
            yield url
    finally:
        client = redis.Redis.from_url(services.redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.unlink(*keys)
        client.close()


def _openapi() -> dict[str, Any]:
    """The server's document, built at import so each operation is a test item."""
    document: dict[str, Any] = create_app(_never_called, ServerOptions()).openapi()
    return document


def _never_called() -> Any:
    raise AssertionError("the document is built without starting the app")


api = schemathesis.openapi.from_dict(_openapi())


def test_fuzzed_document_is_the_served_one(fuzzed: str) -> None:
    assert httpx.get(f"{fuzzed}/openapi.json").json() == json.loads(json.dumps(_openapi()))


def error_shape(ctx: Any, response: schemathesis.Response, case: schemathesis.Case[Any]) -> None:
    """Every 4xx is {"error": message}."""
    if 400 <= response.status_code < 500:
        body = json.loads(response.content)
        assert set(body) == {"error"}, body
        assert isinstance(body["error"], str), body


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True)  # fmt: skip
@api.parametrize()
def test_no_operation_answers_a_server_error(case: schemathesis.Case[Any], fuzzed: str) -> None:
    response = case.call(base_url=fuzzed, timeout=30)
    case.validate_response(response, checks=[not_a_server_error, error_shape])


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["card_0001", "card_0002", "", "\x00", "\x1f", "é" * 3, "x" * 100_000])
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True)  # fmt: skip
@given(
    values=st.lists(SCALARS, min_size=0, max_size=8),
    refs=st.lists(st.sampled_from(REFS), min_size=1, max_size=4, unique=True),
    rows=st.booleans(),
)
def test_awkward_entity_rows_never_fail_the_server(
    fuzzed: str, values: list[Any], refs: list[str], rows: bool
) -> None:
    entities: Any = [{"card_id": v} for v in values] if rows else {"card_id": values}
    response = httpx.post(f"{fuzzed}/features", json={"entities": entities, "features": refs},
                          timeout=30)  # fmt: skip
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        features = response.json()["features"]
        assert [f["ref"] for f in features] == refs
        for feature in features:
            assert len(feature["values"]) == len(values)
            assert len(feature["statuses"]) == len(values)
            assert len(feature["freshness_seconds"]) == len(values)
    else:
        assert set(response.json()) == {"error"}


def test_keys_of_every_type_read_the_same_entity(fuzzed: str) -> None:
    """A key is its text: 7 and "7" are one entity, as the consumer writes them."""
    as_text = httpx.post(
        f"{fuzzed}/features", json={"entities": {"card_id": ["7"]}, "features": REFS}
    )
    as_number = httpx.post(
        f"{fuzzed}/features", json={"entities": {"card_id": [7]}, "features": REFS}
    )
    assert as_text.status_code == as_number.status_code == 200
    assert as_text.json()["features"] == as_number.json()["features"]

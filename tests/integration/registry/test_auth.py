"""Registry authentication: HTTP basic (the stock client's ``basic.auth.user.info``) and
bearer tokens guard writes; reads stay open unless ``protect_reads`` is set. A refusal is
a Confluent-style 401 (error code 40101) that never echoes a credential."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from featurestore.contracts.registry import RegistryAuth
from tests.conftest import Services
from tests.integration.registry.conftest import RunningRegistry, fresh_topic

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).parents[3] / "schemas"
MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
USER_INFO = "alice:s3cret"
TOKEN = "t0k"
# Everything a test sends as a credential, right or wrong: no answer may contain one.
SECRETS = ("s3cret", "alice:s3cret", "wr0ng-pass", "wr0ng-t0ken", "mallory")


def v1() -> Schema:
    return Schema((SCHEMAS / "card_payment.v1.avsc").read_text(), "AVRO")


def plain(name: str) -> str:
    return json.dumps({"type": "record", "name": name, "fields": [{"name": "a", "type": "int"}]})


def basic(user_info: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user_info.encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_no_secret(*texts: str, secrets: Iterable[str] = SECRETS) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked in {text!r}"


def assert_unauthorized(response: httpx.Response) -> None:
    """A Confluent-style 401: the registry's media type, a challenge, code 40101, no secret."""
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == MEDIA_TYPE
    assert "www-authenticate" in response.headers
    body = response.json()
    assert body["error_code"] == 40101
    assert isinstance(body["message"], str)
    assert "credentials" in body["message"]
    assert_no_secret(response.text, *response.headers.values())


def assert_refused(error: pytest.ExceptionInfo[SchemaRegistryError]) -> None:
    assert error.value.http_status_code == 401
    assert error.value.error_code == 40101
    assert "credentials" in error.value.error_message
    assert "basic.auth.user.info" in error.value.error_message  # says how to fix it
    assert_no_secret(error.value.error_message, str(error.value))


@pytest.fixture
def start_secured(
    services: Services, start_registry: Callable[..., RunningRegistry]
) -> Callable[[RegistryAuth], RunningRegistry]:
    """Start a registry with ``auth`` on a topic of its own that is ready for it."""

    def start(auth: RegistryAuth) -> RunningRegistry:
        return start_registry(topic=fresh_topic("auth"), auth=auth)

    return start


@pytest.fixture
def basic_registry(start_secured: Callable[[RegistryAuth], RunningRegistry]) -> RunningRegistry:
    return start_secured(RegistryAuth(user_info=USER_INFO))


@pytest.fixture
def token_registry(start_secured: Callable[[RegistryAuth], RunningRegistry]) -> RunningRegistry:
    return start_secured(RegistryAuth(token=TOKEN))


def test_stock_client_needs_basic_credentials_to_write(basic_registry: RunningRegistry) -> None:
    anonymous = basic_registry.client()
    with pytest.raises(SchemaRegistryError) as refused:
        anonymous.register_schema("pay-value", v1())
    assert_refused(refused)

    alice = basic_registry.client(**{"basic.auth.user.info": USER_INFO})
    schema_id = alice.register_schema("pay-value", v1())

    # Reads stay open to everyone.
    reader = basic_registry.client()
    assert reader.get_subjects() == ["pay-value"]
    assert reader.get_versions("pay-value") == [1]
    assert reader.get_latest_version("pay-value").schema_id == schema_id
    assert reader.get_schema(schema_id).schema_str == alice.get_schema(schema_id).schema_str
    assert reader.get_compatibility() == "BACKWARD"
    assert reader.test_compatibility("pay-value", v1())
    assert reader.lookup_schema("pay-value", v1()).version == 1

    # The user:password in the URL is the stock client's other way to send it.
    host = basic_registry.url.removeprefix("http://")
    in_url = basic_registry.client(url=f"http://{USER_INFO}@{host}")
    assert in_url.register_schema("other-value", v1()) == schema_id


def test_every_write_is_guarded(basic_registry: RunningRegistry) -> None:
    alice = basic_registry.client(**{"basic.auth.user.info": USER_INFO})
    alice.register_schema("pay-value", v1())
    anonymous = basic_registry.client()
    writes: list[Callable[[], object]] = [
        lambda: anonymous.register_schema("pay-value", Schema(plain("Other"), "AVRO")),
        lambda: anonymous.set_compatibility("pay-value", "NONE"),
        lambda: anonymous.set_compatibility(level="NONE"),
        lambda: anonymous.delete_config("pay-value"),
        anonymous.delete_config,
        lambda: anonymous.delete_version("pay-value", 1),
        lambda: anonymous.delete_subject("pay-value"),
    ]
    for write in writes:
        with pytest.raises(SchemaRegistryError) as refused:
            write()
        assert_refused(refused)
    # Nothing changed.
    assert alice.get_versions("pay-value") == [1]
    assert alice.get_compatibility() == "BACKWARD"
    assert sorted(alice.get_subjects()) == ["pay-value"]


def test_wrong_basic_credentials_are_refused(basic_registry: RunningRegistry) -> None:
    for user_info in ("alice:wr0ng-pass", "mallory:s3cret", "alice:", "alice:s3cret "):
        client = basic_registry.client(**{"basic.auth.user.info": user_info})
        with pytest.raises(SchemaRegistryError) as refused:
            client.register_schema("pay-value", v1())
        assert_refused(refused)
    url = f"{basic_registry.url}/subjects/pay-value/versions"
    body = {"schema": plain("R")}
    for headers in (
        basic("alice:wr0ng-pass"),
        {"Authorization": "Basic !!not-base64!!"},
        {"Authorization": "Basic"},
        {"Authorization": "Basic " + base64.b64encode(b"alice:s3cret").decode()[:-2]},
        bearer("s3cret"),  # the password as a token is no token
        bearer("alice:s3cret"),
    ):
        assert_unauthorized(httpx.post(url, json=body, headers=headers))
    assert basic_registry.client().get_subjects() == []


def test_bearer_token_guards_writes(token_registry: RunningRegistry) -> None:
    url = f"{token_registry.url}/subjects/pay-value/versions"
    body = {"schema": plain("R")}

    assert_unauthorized(httpx.post(url, json=body))
    assert_unauthorized(httpx.post(url, json=body, headers=bearer("wr0ng-t0ken")))
    assert_unauthorized(httpx.post(url, json=body, headers={"Authorization": "Bearer"}))
    assert_unauthorized(httpx.post(url, json=body, headers=bearer(TOKEN + "x")))
    assert_unauthorized(httpx.post(url, json=body, headers=basic(f"x:{TOKEN}")))
    challenged = httpx.post(url, json=body, headers=bearer("wr0ng-t0ken"))
    assert "Bearer" in challenged.headers["www-authenticate"]
    assert_no_secret(challenged.text, secrets=(TOKEN, "wr0ng-t0ken"))

    written = httpx.post(url, json=body, headers=bearer(TOKEN))
    assert written.status_code == 200, written.text
    assert written.headers["content-type"] == MEDIA_TYPE
    schema_id = written.json()["id"]
    config = httpx.put(
        f"{token_registry.url}/config/pay-value",
        json={"compatibility": "FULL"},
        headers=bearer(TOKEN),
    )
    assert config.json() == {"compatibility": "FULL"}

    # Reads are open.
    read = httpx.get(f"{token_registry.url}/schemas/ids/{schema_id}")
    assert read.status_code == 200
    assert httpx.get(f"{token_registry.url}/subjects").json() == ["pay-value"]

    # The stock client's static bearer token works too.
    stock = token_registry.client(
        **{
            "bearer.auth.credentials.source": "STATIC_TOKEN",
            "bearer.auth.token": TOKEN,
            "bearer.auth.logical.cluster": "lsrc-test",
        }
    )
    stock.register_schema("card-value", v1())
    assert stock.get_versions("card-value") == [1]
    wrong = token_registry.client(
        **{
            "bearer.auth.credentials.source": "STATIC_TOKEN",
            "bearer.auth.token": "wr0ng-t0ken",
            "bearer.auth.logical.cluster": "lsrc-test",
        }
    )
    with pytest.raises(SchemaRegistryError) as refused:
        wrong.register_schema("card-value", Schema(plain("Other"), "AVRO"))
    assert (refused.value.http_status_code, refused.value.error_code) == (401, 40101)
    assert_no_secret(refused.value.error_message, secrets=(TOKEN, "wr0ng-t0ken"))


def test_token_and_basic_together_accept_either(
    start_secured: Callable[[RegistryAuth], RunningRegistry],
) -> None:
    registry = start_secured(RegistryAuth(token=TOKEN, user_info=USER_INFO))
    url = f"{registry.url}/subjects/s/versions"
    assert httpx.post(url, json={"schema": plain("A")}, headers=bearer(TOKEN)).status_code == 200
    assert httpx.post(url, json={"schema": plain("A")}, headers=basic(USER_INFO)).status_code == 200
    assert_unauthorized(httpx.post(url, json={"schema": plain("A")}, headers=basic(TOKEN)))
    assert_unauthorized(httpx.post(url, json={"schema": plain("A")}, headers=bearer("s3cret")))


def test_protected_reads_need_credentials(
    start_secured: Callable[[RegistryAuth], RunningRegistry],
) -> None:
    registry = start_secured(RegistryAuth(token=TOKEN, user_info=USER_INFO, protect_reads=True))
    alice = registry.client(**{"basic.auth.user.info": USER_INFO})
    schema_id = alice.register_schema("pay-value", v1())

    reads = (
        "/subjects",
        "/subjects/pay-value/versions",
        "/subjects/pay-value/versions/latest",
        f"/schemas/ids/{schema_id}",
        "/config",
        "/schemas/types",
    )
    for path in reads:
        assert_unauthorized(httpx.get(registry.url + path))
        assert_unauthorized(httpx.get(registry.url + path, headers=basic("alice:wr0ng-pass")))
        assert_unauthorized(httpx.get(registry.url + path, headers=bearer("wr0ng-t0ken")))
        assert httpx.get(registry.url + path, headers=basic(USER_INFO)).status_code == 200
        assert httpx.get(registry.url + path, headers=bearer(TOKEN)).status_code == 200
    # The POST reads too: lookup and the compatibility test.
    text = (SCHEMAS / "card_payment.v1.avsc").read_text()
    for path in ("/subjects/pay-value", "/compatibility/subjects/pay-value/versions/latest"):
        assert_unauthorized(httpx.post(registry.url + path, json={"schema": text}))
        answer = httpx.post(registry.url + path, json={"schema": text}, headers=bearer(TOKEN))
        assert answer.status_code == 200, answer.text

    assert httpx.get(f"{registry.url}/subjects", headers=basic(USER_INFO)).json() == ["pay-value"]
    with pytest.raises(SchemaRegistryError) as refused:
        registry.client().get_subjects()
    assert_refused(refused)
    assert alice.get_subjects() == ["pay-value"]


def test_errors_behind_the_guard_leak_no_credentials(basic_registry: RunningRegistry) -> None:
    """Authorised requests that fail still answer without the credentials they carried."""
    headers = basic(USER_INFO)
    url = basic_registry.url
    answers = [
        httpx.post(f"{url}/subjects/s/versions", json={"schema": "{"}, headers=headers),
        httpx.post(f"{url}/subjects/s/versions", json={}, headers=headers),
        httpx.post(f"{url}/subjects/s/versions", content=b"{oops", headers=headers),
        httpx.put(f"{url}/config", json={"compatibility": "SOMETIMES"}, headers=headers),
        httpx.delete(f"{url}/subjects/nope", headers=headers),
        httpx.get(f"{url}/subjects/nope/versions/1", headers=headers),
    ]
    for answer in answers:
        assert 400 <= answer.status_code < 500, answer.text
        assert answer.json()["error_code"] > 0
        assert_no_secret(answer.text, *answer.headers.values())


@pytest.mark.parametrize("path", ["/subjects/s/versions", "/subjects/s", "/config"])
def test_credentials_are_checked_before_the_body(
    start_secured: Callable[[RegistryAuth], RunningRegistry], path: str
) -> None:
    registry = start_secured(RegistryAuth(token=TOKEN, protect_reads=True))
    method = "PUT" if path == "/config" else "POST"
    answer = httpx.request(
        method,
        registry.url + path,
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert_unauthorized(answer)

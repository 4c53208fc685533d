"""The feature server over real HTTP against real Redis: the same values, statuses and
versions as the in-process clients, every error status, token auth, metrics, and a
Redis outage answered with 503 then recovered from."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from featurestore.local.process import free_port, stop
from featurestore.local.redis import RedisServer, wait_for_redis
from featurestore.online import connect_async
from featurestore.serving import (
    EXPIRED,
    NOT_FOUND,
    NULL_VALUE,
    OUTSIDE_MAX_AGE,
    PRESENT,
    AsyncFeatureClient,
    FeatureClient,
)
from featurestore.serving.response import feast_status
from featurestore.serving.server import ServerOptions, create_app
from tests.frames import assert_close
from tests.integration.serving.conftest import (
    REFS,
    Served,
    fixed_clock,
    running,
    serve_fixture,
)

pytestmark = pytest.mark.integration


def app_for(served: Served, options: ServerOptions | None = None) -> Any:
    def connect() -> AsyncFeatureClient:
        client = connect_async(served.redis_url, socket_timeout=2, socket_connect_timeout=2)
        return AsyncFeatureClient(served.catalog, client, clock=fixed_clock)

    return create_app(connect, options or ServerOptions())


@pytest.fixture
def server(served: Served) -> Iterator[str]:
    with running(app_for(served, ServerOptions(max_entities=50))) as url:
        yield url


@pytest.fixture
def local(served: Served) -> Iterator[FeatureClient]:
    client = FeatureClient.connect(served.definitions, clock=fixed_clock)
    yield client
    client.close()


def test_http_values_equal_the_in_process_client(
    served: Served, server: str, local: FeatureClient
) -> None:
    cards = [*served.cards[:6], served.stale, served.unknown, served.cards[0]]
    body = httpx.post(f"{server}/features",
                      json={"entities": {"card_id": cards}, "features": REFS}).json()  # fmt: skip
    expected = local.get_online_features({"card_id": cards}, REFS)
    assert body["entities"] == {"card_id": cards}
    assert [f["ref"] for f in body["features"]] == REFS
    for feature in body["features"]:
        name = feature["name"]
        assert feature["version"] == 1 == expected.version(name)
        assert feature["statuses"] == expected.status(name)
        assert feature["freshness_seconds"] == expected.freshness(name)
        assert_close_lists(feature["values"], expected.values[name].to_list(), name)
    statuses = body["features"][0]["statuses"]
    assert statuses == [PRESENT] * 6 + [EXPIRED, NOT_FOUND, PRESENT]
    count = body["features"][0]["values"]
    assert count[6:8] == [0, 0]  # an expired or unknown card's windows are empty
    assert body["features"][0]["freshness_seconds"][7] is None
    assert all(0 < f < 3 * 3600 for f in body["features"][0]["freshness_seconds"][:6])


def assert_close_lists(got: list[Any], want: list[Any], name: str) -> None:
    assert len(got) == len(want), name
    for a, b in zip(got, want, strict=True):
        if isinstance(b, float):
            assert a == pytest.approx(b, rel=1e-12), name
        else:
            assert a == b, name


def test_async_client_equals_the_sync_client(served: Served, local: FeatureClient) -> None:
    async def lookup() -> Any:
        client = AsyncFeatureClient.connect(served.definitions, clock=fixed_clock)
        try:
            rows = [{"card_id": c} for c in [*served.cards, served.unknown]]
            return await client.get_online_features(rows, "fraud_model")
        finally:
            await client.aclose()

    got = asyncio.run(lookup())
    want = local.get_online_features({"card_id": [*served.cards, served.unknown]}, "fraud_model")
    assert_close(got.to_polars(metadata=True), want.to_polars(metadata=True))
    assert got.feature_names == [
        "amount_sum_1h", "amount_count_10m", "merchant_id_distinct_24h", "country_last_24h"
    ]  # fmt: skip


def test_feature_service_single_entity_route_and_views(
    served: Served, server: str, local: FeatureClient
) -> None:
    card = served.cards[3]
    by_service = httpx.post(f"{server}/features", json={
        "entities": [{"card_id": card}], "feature_service": "fraud_model",
        "full_feature_names": True}).json()  # fmt: skip
    assert by_service["feature_service"] == "fraud_model"
    assert [f["name"] for f in by_service["features"]] == [
        "card_spend__amount_sum_1h", "card_spend__amount_count_10m",
        "card_places__merchant_id_distinct_24h", "card_places__country_last_24h",
    ]  # fmt: skip
    one = httpx.get(f"{server}/features/card_spend/{card}").json()
    everything = [f"card_spend:{f.name}" for f in served.catalog.views["card_spend"].features]
    want = local.get_online_features({"card_id": [card]}, everything)
    assert one["view"] == "card_spend"
    assert one["version"] == 1
    assert one["status"] == PRESENT
    assert one["entity"] == {"card_id": card}
    assert_close_lists(list(one["features"].values()), list(want.values.row(0)), "row")
    assert list(one["features"]) == want.feature_names
    some = httpx.get(f"{server}/features/card_places/{card}",
                     params={"features": "country_last_24h", "version": 1}).json()  # fmt: skip
    assert list(some["features"]) == ["country_last_24h"]
    views = httpx.get(f"{server}/views").json()
    assert [v["name"] for v in views["views"]] == ["card_places", "card_spend"]
    spend = views["views"][1]
    assert spend["owner"] == "payments-team@example.com"
    assert spend["join_keys"] == ["card_id"]
    assert "amount_std_24h" in spend["features"]
    assert spend["versions"] == [1]
    assert views["feature_services"][0]["name"] == "fraud_model"


def test_feast_route_answers_in_feasts_shapes(
    served: Served, server: str, local: FeatureClient
) -> None:
    """``POST /get-online-features`` takes Feast's request and answers Feast's response:
    the join keys first among ``feature_names`` and ``results``, Feast's statuses
    (OUTSIDE_MAX_AGE for an expired entity, NULL_VALUE for a null value), each value's
    event time as RFC 3339; the values those of ``/features``."""
    cards = [*served.cards[:3], served.stale, served.unknown]
    body = httpx.post(f"{server}/get-online-features",
                      json={"entities": {"card_id": cards}, "features": REFS}).json()  # fmt: skip
    expected = local.get_online_features({"card_id": cards}, REFS)
    assert body["metadata"] == {"feature_names": ["card_id", *expected.feature_names]}
    keys, *features = body["results"]
    assert keys == {"values": cards, "statuses": [PRESENT] * 5,
                    "event_timestamps": ["1970-01-01T00:00:00Z"] * 5}  # fmt: skip
    for name, result in zip(expected.feature_names, features, strict=True):
        assert_close_lists(result["values"], expected.values[name].to_list(), name)
        want = [feast_status(s, v) for s, v in zip(expected.status(name), result["values"],
                                                    strict=True)]  # fmt: skip
        assert result["statuses"] == want == expected.status(name, feast=True)
        assert result["statuses"][3:] == [OUTSIDE_MAX_AGE, NOT_FOUND]
        stamps = result["event_timestamps"]
        assert stamps[4] == "1970-01-01T00:00:00Z"  # nothing held
        newest = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in stamps[:4]]
        assert all(t.tzinfo is not None and t.year >= 2026 for t in newest)
    assert feast_status(PRESENT, None) == NULL_VALUE  # a mean over an empty window
    assert feast_status(EXPIRED, 1.5) == OUTSIDE_MAX_AGE
    ask = {"entities": {"card_id": cards[:1]}, "feature_service": "fraud_model",
           "features": [], "full_feature_names": True,
           "include_feature_view_version_metadata": True}  # fmt: skip
    by_service = httpx.post(f"{server}/get-online-features", json=ask).json()
    assert by_service["metadata"]["feature_names"][:2] == ["card_id", "card_spend__amount_sum_1h"]
    assert by_service["metadata"]["feature_view_metadata"] == [
        {"name": "card_spend", "version": 1}, {"name": "card_places", "version": 1}
    ]  # fmt: skip
    both = httpx.post(f"{server}/get-online-features", json={**ask, "features": REFS})
    assert both.status_code == 422
    assert "exactly one of" in both.json()["error"]


@pytest.mark.parametrize(
    ("request_json", "status", "words"),
    [
        ({"entities": {"card_id": ["a"]}, "features": ["nope:x"]}, 404,
         "unknown feature view 'nope'"),
        ({"entities": {"card_id": ["a"]}, "features": ["card_spend:amount_p99_1h"]}, 404,
         "no feature 'amount_p99_1h'"),
        ({"entities": {"card_id": ["a"]}, "features": ["card_spend@7:amount_sum_1h"]}, 404,
         "has no version 7"),
        ({"entities": {"card_id": ["a"]}, "feature_service": "ghost"}, 404,
         "unknown feature service 'ghost'"),
        ({"entities": {"card_id": ["a"]}, "features": ["card_spend"]}, 404,
         "not a feature reference"),
        ({"entities": {"user_id": ["a"]}, "features": ["card_spend:amount_sum_1h"]}, 422,
         "missing join keys ['card_id']"),
        ({"entities": {"card_id": ["a", "b"], "x": ["c"]}, "features": ["card_spend:x_1h"]},
         422, "as many values"),
        ({"entities": {"card_id": ["a"]}}, 422, "exactly one of"),
        ({"entities": {"card_id": [["nested"]]}, "features": ["card_spend:amount_sum_1h"]}, 422,
         "malformed request"),
        ({"entities": "card_1", "features": ["card_spend:amount_sum_1h"]}, 422, "entities"),
        ({"entities": {"card_id": ["a"]}, "features": []}, 422, "empty"),
        ({"entities": {"card_id": ["a"]}, "features": ["card_spend:amount_sum_1h"], "x": 1}, 422,
         "body.x: Extra inputs"),
        ({"entities": {"card_id": [f"c{i}" for i in range(51)]},
          "features": ["card_spend:amount_sum_1h"]}, 413, "maximum is 50"),
    ],
)  # fmt: skip
def test_errors_have_their_status_and_name_the_problem(
    server: str, request_json: dict[str, Any], status: int, words: str
) -> None:
    response = httpx.post(f"{server}/features", json=request_json)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_unreadable_bodies_and_unknown_routes(server: str) -> None:
    garbage = httpx.post(f"{server}/features", content=b"{not json",
                         headers={"content-type": "application/json"})  # fmt: skip
    assert garbage.status_code == 422
    assert "malformed request" in garbage.json()["error"]
    assert httpx.get(f"{server}/features/nope/card_1").status_code == 404
    assert "unknown feature view" in httpx.get(f"{server}/features/nope/card_1").json()["error"]
    assert httpx.get(f"{server}/nowhere").status_code == 404
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server}/readyz").json() == {"status": "ready"}
    paths = httpx.get(f"{server}/openapi.json").json()["paths"]
    assert {"/features", "/features/{view}/{key}", "/views", "/healthz", "/readyz"} <= set(paths)


def test_metrics_count_latency_by_route_and_errors(server: str, served: Served) -> None:
    httpx.post(f"{server}/features",
               json={"entities": {"card_id": served.cards[:2]}, "features": REFS})  # fmt: skip
    httpx.post(f"{server}/features", json={"entities": {"card_id": ["a"]}, "features": ["no:x"]})
    text = httpx.get(f"{server}/metrics").text
    assert (
        'featurestore_http_request_seconds_count{method="POST",route="/features",server="feature-server"}'
        in text
    )
    assert (
        'featurestore_http_errors_total{method="POST",route="/features",server="feature-server",status="404"}'
        in text
    )
    assert 'featurestore_lookup_seconds_count{client="server"}' in text


def test_token_guards_lookups_but_not_health(served: Served) -> None:
    with running(app_for(served, ServerOptions(token="t0ken"))) as url:
        body = {"entities": {"card_id": served.cards[:1]}, "features": REFS[:1]}
        assert httpx.post(f"{url}/features", json=body).status_code == 401
        wrong = httpx.post(f"{url}/features", json=body, headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401
        assert "Bearer" in wrong.json()["error"]
        assert httpx.get(f"{url}/views").status_code == 401
        right = httpx.post(f"{url}/features", json=body,
                           headers={"Authorization": "Bearer t0ken"})  # fmt: skip
        assert right.status_code == 200
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/metrics").status_code == 200


def test_redis_down_is_503_and_lookups_recover(tmp_path: Path, redis_prefix: str) -> None:
    redis = RedisServer(tmp_path / "redis", free_port())
    record = redis.start()
    try:
        wait_for_redis(redis.url, record)
        served = serve_fixture(tmp_path, redis_prefix, redis.url)
        body = {"entities": {"card_id": served.cards[:3]}, "features": REFS}
        with running(app_for(served)) as url:
            before = httpx.post(f"{url}/features", json=body).json()
            stop(record)
            down = httpx.post(f"{url}/features", json=body, timeout=30)
            assert down.status_code == 503, down.text
            assert "unavailable" in down.json()["error"]
            assert down.headers["retry-after"] == "1"
            assert httpx.get(f"{url}/readyz", timeout=30).status_code == 503
            record = redis.start()  # the same data dir: its append-only file comes back
            wait_for_redis(redis.url, record)
            deadline = time.monotonic() + 20
            while (
                again := httpx.post(f"{url}/features", json=body, timeout=30)
            ).status_code != 200:
                assert time.monotonic() < deadline, again.text
                time.sleep(0.2)
            assert again.json() == before
            assert httpx.get(f"{url}/readyz").status_code == 200
    finally:
        stop(record)

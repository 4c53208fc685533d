"""Redis URLs to redis-py clients, without a server: which client and which connection
arguments each form builds, password redaction, and errors for malformed URLs.

Standalone and Sentinel clients connect lazily, so they are built here and their
connection arguments inspected; a cluster client connects while it is built, so for
clusters the parsed target is checked (tests/integration/online connects for real)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from redis.connection import Connection, SSLConnection
from redis.sentinel import (
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from featurestore.errors import ConfigError
from featurestore.online.connection import connect, parse_redis_url, redact_url


def _plain(url: str, **options: Any) -> redis.Redis:
    client = connect(url, **options)
    assert type(client) is redis.Redis
    return client


def _sentinel_pool(client: redis.Redis) -> SentinelConnectionPool:
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    return pool


def test_redis_url_builds_a_plain_client_with_host_port_and_db() -> None:
    client = _plain("redis://cache.internal:6380/2", decode_responses=True)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.internal", 6380, 2)
    assert kwargs["decode_responses"] is True
    assert client.connection_pool.connection_class is Connection


@pytest.mark.parametrize(
    ("url", "username", "password"),
    [
        ("redis://:secret@h:1/0", None, "secret"),
        ("redis://default:secret@h:1/0", "default", "secret"),
        ("redis://app:p%40ss%2Fw%3Ard@h:1/0", "app", "p@ss/w:rd"),
    ],
)
def test_credentials_come_from_the_url(url: str, username: str | None, password: str) -> None:
    kwargs = _plain(url).connection_pool.connection_kwargs
    assert kwargs.get("username") == username
    assert kwargs["password"] == password
    assert parse_redis_url(url).options["password"] == password


def test_rediss_uses_tls_with_query_options_as_redis_py_reads_them() -> None:
    url = "rediss://h:6379/0?ssl_cert_reqs=none&ssl_ca_certs=/etc/ca.pem&socket_timeout=2.5"
    client = _plain(url)
    assert client.connection_pool.connection_class is SSLConnection
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["ssl_cert_reqs"] == "none"
    assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert kwargs["socket_timeout"] == 2.5


def test_url_options_win_over_keyword_options_as_in_redis_py() -> None:
    client = _plain("redis://h:1/0?socket_timeout=3", socket_timeout=9, max_connections=7)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 3.0
    assert client.connection_pool.max_connections == 7


def test_cluster_url_lists_every_startup_node_with_credentials() -> None:
    target = parse_redis_url("redis+cluster://app:secret@10.0.0.1:7000,10.0.0.2,[::1]:7002")
    assert target.kind == "cluster"
    assert target.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert target.options == {"username": "app", "password": "secret"}
    assert not target.tls


def test_rediss_cluster_turns_on_tls_for_every_node() -> None:
    target = parse_redis_url("rediss+cluster://:pw@n1:7000,n2:7001?ssl_cert_reqs=none")
    assert target.tls
    assert target.options == {"password": "pw", "ssl": True, "ssl_cert_reqs": "none"}


def test_cluster_accepts_database_0_only() -> None:
    assert "db" not in parse_redis_url("redis+cluster://n1:7000/0").options
    with pytest.raises(ConfigError, match="only database 0"):
        parse_redis_url("redis+cluster://n1:7000/3")


def test_sentinel_url_asks_the_sentinels_for_the_masters_address() -> None:
    client = _plain("redis+sentinel://:secret@s1:5000,s2/mymaster/4", decode_responses=True)
    assert type(client) is redis.Redis
    pool = _sentinel_pool(client)
    assert pool.service_name == "mymaster"
    assert pool.connection_class is SentinelManagedConnection
    master = pool.connection_kwargs
    assert (master["password"], master["db"], master["decode_responses"]) == ("secret", 4, True)
    sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
    assert [(s["host"], s["port"]) for s in sentinels] == [("s1", 5000), ("s2", 26379)]
    # The master's password is not sent to the sentinels.
    assert all(s.get("password") is None for s in sentinels)


def test_sentinels_get_their_own_credentials_and_tls() -> None:
    client = _plain(
        "rediss+sentinel://:master-pw@s1:5000/mymaster"
        "?sentinel_password=sentinel-pw&ssl_cert_reqs=none&socket_timeout=2"
    )
    pool = _sentinel_pool(client)
    assert pool.connection_class is SentinelManagedSSLConnection
    assert pool.connection_kwargs["password"] == "master-pw"
    assert pool.connection_kwargs["ssl_cert_reqs"] == "none"
    (sentinel,) = pool.sentinel_manager.sentinels
    kwargs = sentinel.connection_pool.connection_kwargs
    assert sentinel.connection_pool.connection_class is SSLConnection
    assert (kwargs["password"], kwargs["ssl_cert_reqs"]) == ("sentinel-pw", "none")
    assert kwargs["socket_timeout"] == 2.0


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://:secret@h:1/0", "redis://:***@h:1/0"),
        ("redis://app:secret@h:1/0", "redis://app:***@h:1/0"),
        ("redis://app@h:1/0", "redis://app@h:1/0"),
        ("redis://h:1/0", "redis://h:1/0"),
        ("rediss+cluster://u:se@cr@t@a:1,b:2", "rediss+cluster://u:***@a:1,b:2"),
        (
            "redis+sentinel://s:1/m?sentinel_password=x&ssl_password=y&password=z&db=1",
            "redis+sentinel://s:1/m?sentinel_password=***&ssl_password=***&password=***&db=1",
        ),
        ("user:secret@h:1", "user:***@h:1"),
    ],
)
def test_redact_url_masks_every_password(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_target_repr_hides_the_password() -> None:
    target = parse_redis_url("redis+cluster://app:hunter2@n1:7000?ssl_password=hunter3")
    assert "hunter" not in repr(target)
    assert "app:***@n1:7000" in repr(target)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://:secret@h:1", "unknown scheme 'http://'"),
        ("h:secret@localhost:6379", "no scheme"),
        ("redis+cluster://:secret@", "a host is missing"),
        ("redis+cluster://:secret@a:1,,b:2", "a host is missing"),
        ("redis+cluster://:secret@a:port", "port in 'a:port' is not a number"),
        ("redis+cluster://:secret@a:99999", "port in 'a:99999' is not a number"),
        ("redis+sentinel://:secret@s:26379", "needs /service_name"),
        ("redis+sentinel://:secret@s:26379/m/1/2", "needs /service_name"),
        ("redis://:secret@h:1/zero", "is not a database number"),
        ("redis://:secret@a:1,b:2/0", "several hosts need"),
        ("redis://:secret@h:1/0?socket_timeout=soon", "socket_timeout"),
    ],
)
def test_malformed_urls_name_the_url_without_its_password(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        connect(url)
    message = str(caught.value)
    assert problem in message
    assert redact_url(url) in message
    assert "secret" not in message
    assert "redis+cluster://" in message  # lists the accepted forms
    assert "redis+sentinel://" in message

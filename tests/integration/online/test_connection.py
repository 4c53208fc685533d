"""`connect` against real Redis deployments: the session's standalone server, one with
a password, a 3-node cluster, a master behind a sentinel, and a TLS server."""

from __future__ import annotations

import re

import pytest
import redis
import redis.cluster

from featurestore.errors import ConfigError
from featurestore.local.process import free_port
from featurestore.local.redis_cluster import RedisCluster
from featurestore.online.connection import connect
from tests.conftest import Services
from tests.integration.online.conftest import PASSWORD, TlsServer
from tests.integration.test_redis import GUARDED_INCREMENT

pytestmark = pytest.mark.integration


def test_redis_url_reaches_the_session_server(services: Services, redis_prefix: str) -> None:
    client = connect(services.redis_url, decode_responses=True, check=True)
    assert type(client) is redis.Redis
    client.set(f"{redis_prefix}k", "v")
    assert client.get(f"{redis_prefix}k") == "v"
    client.close()


@pytest.mark.parametrize("user", ["", "default"])
def test_password_in_the_url_logs_in(password_redis_port: int, user: str) -> None:
    client = connect(f"redis://{user}:{PASSWORD}@127.0.0.1:{password_redis_port}/0", check=True)
    client.set(f"auth-{user or 'none'}", "ok")
    assert client.get(f"auth-{user or 'none'}") == b"ok"
    client.close()


@pytest.mark.parametrize(
    "userinfo", [":not-the-password@", "default:not-the-password@", "nobody:not-the-password@", ""]
)
def test_wrong_or_missing_password_is_a_config_error(
    password_redis_port: int, userinfo: str
) -> None:
    url = f"redis://{userinfo}127.0.0.1:{password_redis_port}/0"
    with pytest.raises(ConfigError, match="rejected the credentials") as caught:
        connect(url, check=True)
    assert f"127.0.0.1:{password_redis_port}" in str(caught.value)
    assert "not-the-password" not in str(caught.value)


def test_cluster_client_reports_rejected_credentials_too(password_redis_port: int) -> None:
    # redis-py's cluster client wraps the node's AuthenticationError in its own error.
    url = f"redis+cluster://:not-the-password@127.0.0.1:{password_redis_port}"
    with pytest.raises(ConfigError, match="rejected the credentials") as caught:
        connect(url)
    assert "not-the-password" not in str(caught.value)


def test_nothing_listening_is_a_config_error_naming_the_url() -> None:
    port = free_port()
    redacted = re.escape(f"Could not reach Redis at redis://:***@127.0.0.1:{port}/0")
    with pytest.raises(ConfigError, match=redacted):
        connect(f"redis://:pw@127.0.0.1:{port}/0", check=True)


def test_cluster_url_at_a_standalone_server_says_it_is_not_a_cluster(
    password_redis_port: int,
) -> None:
    with pytest.raises(ConfigError, match="not a cluster: use redis://"):
        connect(f"redis+cluster://:{PASSWORD}@127.0.0.1:{password_redis_port}")


def _pipeline(client: redis.cluster.RedisCluster) -> redis.cluster.ClusterPipeline:
    pipe: redis.cluster.ClusterPipeline = client.pipeline(transaction=False)  # type: ignore[no-untyped-call]
    return pipe


def _keys_on_every_node(client: redis.cluster.RedisCluster, prefix: str) -> list[str]:
    keys = [f"{prefix}:{i}" for i in range(30)]
    nodes = {client.get_node_from_key(key).name for key in keys}  # type: ignore[no-untyped-call]
    assert len(nodes) == 3, "the keys should spread over the 3 primaries"
    return keys


def test_cluster_url_serves_keys_from_every_node(redis_cluster: RedisCluster) -> None:
    client = connect(redis_cluster.url, decode_responses=True, check=True)
    assert isinstance(client, redis.cluster.RedisCluster)
    assert len(client.get_primaries()) == 3  # type: ignore[no-untyped-call]
    keys = _keys_on_every_node(client, "set-get")
    for i, key in enumerate(keys):
        client.set(key, i)
    assert [client.get(key) for key in keys] == [str(i) for i in range(len(keys))]
    client.close()


def test_cluster_runs_single_key_lua_on_each_keys_node(redis_cluster: RedisCluster) -> None:
    client = connect(redis_cluster.url, decode_responses=True)
    assert isinstance(client, redis.cluster.RedisCluster)
    keys = _keys_on_every_node(client, "lua")
    apply = client.register_script(GUARDED_INCREMENT)
    for key in keys:
        assert apply(keys=[key], args=["_off:0", 5, "count", 2]) == 1
        assert apply(keys=[key], args=["_off:0", 5, "count", 2]) == 0  # replay: no-op
    # Plain EVAL (not only EVALSHA) routes by its key too.
    for key in keys:
        assert client.eval(GUARDED_INCREMENT, 1, key, "_off:0", 6, "count", 1) == 1
    assert {client.hget(key, "count") for key in keys} == {"3"}
    client.close()


def test_cluster_pipelines_hgetall_across_slots(redis_cluster: RedisCluster) -> None:
    client = connect(redis_cluster.url, decode_responses=True)
    assert isinstance(client, redis.cluster.RedisCluster)
    keys = _keys_on_every_node(client, "pipe")
    write = _pipeline(client)
    for i, key in enumerate(keys):
        write.hset(key, mapping={"count": i, "sum": i * 1.5})
    assert write.execute() == [2] * len(keys)
    read = _pipeline(client)
    for key in keys:
        read.hgetall(key)
    hashes = read.execute()
    assert [int(h["count"]) for h in hashes] == list(range(len(keys)))
    assert float(hashes[7]["sum"]) == 10.5
    client.close()


def test_cluster_pipelines_lua_by_raw_evalsha(redis_cluster: RedisCluster) -> None:
    # redis-py blocks EVALSHA through Script objects in a cluster pipeline (and its
    # ClusterPipeline.eval takes no arguments), but a raw EVALSHA is routed by its key.
    client = connect(redis_cluster.url, decode_responses=True)
    assert isinstance(client, redis.cluster.RedisCluster)
    keys = _keys_on_every_node(client, "lua-pipe")
    sha = client.script_load(GUARDED_INCREMENT)  # loads on every primary
    pipe = _pipeline(client)
    for i, key in enumerate(keys):
        pipe.execute_command("EVALSHA", sha, 1, key, "_off:0", 1, "count", i)  # type: ignore[no-untyped-call]
    assert pipe.execute() == [1] * len(keys)
    assert [int(client.hget(key, "count") or -1) for key in keys] == list(range(len(keys)))
    client.close()


def test_sentinel_url_reaches_the_master(sentinel_port: int) -> None:
    client = connect(
        f"redis+sentinel://127.0.0.1:{sentinel_port}/mymaster", decode_responses=True, check=True
    )
    client.set("through-sentinel", "v")
    assert client.get("through-sentinel") == "v"
    assert client.info("replication")["role"] == "master"
    client.close()


def test_sentinel_without_that_master_is_a_config_error(sentinel_port: int) -> None:
    with pytest.raises(ConfigError, match="No master found for 'nosuchmaster'"):
        connect(f"redis+sentinel://127.0.0.1:{sentinel_port}/nosuchmaster", check=True)


def test_tls_with_the_servers_ca(tls_redis: TlsServer) -> None:
    url = f"rediss://127.0.0.1:{tls_redis.port}/0?ssl_ca_certs={tls_redis.ca_file}"
    client = connect(url, check=True)
    client.set("tls", "on")
    assert client.get("tls") == b"on"
    client.close()


def test_tls_without_verification(tls_redis: TlsServer) -> None:
    client = connect(f"rediss://127.0.0.1:{tls_redis.port}/0?ssl_cert_reqs=none", check=True)
    assert client.ping()
    client.close()


def test_tls_with_an_unknown_ca_says_how_to_trust_it(tls_redis: TlsServer) -> None:
    with pytest.raises(ConfigError, match="ssl_ca_certs="):
        connect(f"rediss://127.0.0.1:{tls_redis.port}/0", check=True)

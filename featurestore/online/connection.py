"""Turn a Redis URL into a redis-py client, for any Redis a user runs.

Accepted forms (``rediss`` for TLS, in every form):

    redis://[user:password@]host:port[/db]
    redis+cluster://[user:password@]host:port[,host:port...]
    redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]

Query parameters (``ssl_cert_reqs=none``, ``ssl_ca_certs=/ca.pem``, ``socket_timeout=2``)
are read and typed by redis-py's own ``parse_url``; for Sentinel, ``sentinel_username``
and ``sentinel_password`` authenticate to the sentinels, the URL's user and password to
the master. Options in the URL win over keyword options, as in redis-py.

Invariants: parsing is pure and never connects; every message or repr naming a URL
names ``redact_url(url)``, so a password is never printed. Standalone and Sentinel
clients connect on their first command (or at once with ``check=True``); a cluster
client connects while it is built, because redis-py reads the slot map then.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.exceptions import AuthenticationError, RedisClusterException
from redis.sentinel import Sentinel

from featurestore.errors import ConfigError

Kind = Literal["standalone", "cluster", "sentinel"]
RedisClient = redis.Redis | RedisCluster

ACCEPTED_FORMS = (
    "redis://[user:password@]host:port[/db], "
    "redis+cluster://[user:password@]host:port[,host:port...], "
    "redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db] "
    "(rediss, rediss+cluster and rediss+sentinel for TLS)"
)
_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
}
_DEFAULT_PORT: dict[Kind, int] = {"standalone": 6379, "cluster": 6379, "sentinel": 26379}
# The words of redis-py's RedisClusterExceptions that mean "could not use the cluster".
_CLUSTER_UNREACHABLE = ("cannot be connected", "cluster mode is not enabled", "not covered")
_SECRET_QUERY = re.compile(r"([?&](?:sentinel_|ssl_)?password=)[^&#]*")


@dataclass(frozen=True)
class RedisTarget:
    """What a URL names, parsed without connecting. ``options`` are redis-py connection
    keyword arguments (credentials, TLS, query parameters) and stay out of the repr."""

    url: str  # redacted
    kind: Kind
    tls: bool
    nodes: tuple[tuple[str, int], ...]
    service_name: str | None = None
    options: dict[str, Any] = field(default_factory=dict, repr=False)
    sentinel_auth: dict[str, str] = field(default_factory=dict, repr=False)


def redact_url(url: str) -> str:
    """``url`` with the password in its user info and in any query parameter masked."""
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    at = rest.rfind("@")  # the last '@': a password may hold an unescaped one
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        rest = f"{user}{':***' if colon else ''}{rest[at:]}"
    return _SECRET_QUERY.sub(r"\1***", f"{head}{sep}{rest}")


def parse_redis_url(url: str) -> RedisTarget:
    """The target ``url`` names; a ConfigError naming the (redacted) URL if it is malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        problem = f"unknown scheme {scheme + '://'!r}" if sep else "no scheme"
        raise _malformed(url, problem)
    kind, tls = _SCHEMES[scheme.lower()]
    rest, _, query = rest.partition("?")
    userinfo, _, rest = rest.rpartition("@")
    hosts, _, path = rest.partition("/")
    nodes = tuple(_node(url, part, _DEFAULT_PORT[kind]) for part in hosts.split(","))
    if kind == "standalone" and len(nodes) > 1:
        raise _malformed(url, "several hosts need redis+cluster:// or redis+sentinel://")
    options = _query_options(url, query)
    sentinel_auth = {
        key.removeprefix("sentinel_"): str(options.pop(key))
        for key in ("sentinel_username", "sentinel_password")
        if key in options
    }
    if sentinel_auth and kind != "sentinel":
        raise _malformed(url, "sentinel_username and sentinel_password need redis+sentinel://")
    user, _, password = userinfo.partition(":")
    if user:
        options["username"] = unquote(user)
    if password:
        options["password"] = unquote(password)
    segments = [unquote(s) for s in path.split("/") if s]
    service_name = None
    if kind == "sentinel":
        if not segments or len(segments) > 2:
            raise _malformed(url, "a Sentinel URL needs /service_name[/db] after the hosts")
        service_name = segments.pop(0)
    if len(segments) > 1 or (segments and not segments[0].isdigit()):
        raise _malformed(url, f"the path {'/' + path!r} is not a database number")
    if segments and "db" not in options:
        options["db"] = int(segments[0])
    if kind == "cluster" and options.pop("db", 0) != 0:
        raise _malformed(url, "Redis Cluster has only database 0; drop the /db")
    if tls and kind != "standalone":
        options["ssl"] = True
    return RedisTarget(redact_url(url), kind, tls, nodes, service_name, options, sentinel_auth)


def connect(
    url: str, *, decode_responses: bool = False, check: bool = False, **options: Any
) -> RedisClient:
    """A redis-py client for the Redis ``url`` names: ``redis.Redis`` for standalone and
    Sentinel (the current master), ``RedisCluster`` for a cluster. ``options`` are extra
    redis-py keyword arguments. With ``check``, PING now, so a wrong address, password
    or mode fails here with a ConfigError instead of at the first command."""
    target = parse_redis_url(url)
    merged = {"decode_responses": decode_responses, **options, **target.options}
    client: RedisClient
    with explain_failures(target.url):
        if target.kind == "standalone":
            client = redis.Redis.from_url(url, decode_responses=decode_responses, **options)
        elif target.kind == "cluster":
            nodes = [ClusterNode(h, p) for h, p in target.nodes]  # type: ignore[no-untyped-call]
            client = RedisCluster(startup_nodes=nodes, **merged)
        else:
            client = _sentinel_master(target, merged)
        if check:
            client.ping()
    return client


def connect_async(url: str, *, decode_responses: bool = False, **options: Any) -> Any:
    """`connect` for asyncio services: a ``redis.asyncio`` client for the same URL forms
    (it connects on its first command; a cluster client on ``initialize()`` or its first
    command)."""
    from redis.asyncio import Redis as AsyncRedis
    from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel

    target = parse_redis_url(url)
    merged = {"decode_responses": decode_responses, **options, **target.options}
    if target.kind == "standalone":
        return AsyncRedis.from_url(url, decode_responses=decode_responses, **options)
    if target.kind == "cluster":
        nodes = [AsyncClusterNode(h, p) for h, p in target.nodes]
        return AsyncRedisCluster(startup_nodes=nodes, **merged)
    return _master_for(AsyncSentinel, target, merged)


def _sentinel_kwargs(target: RedisTarget, merged: dict[str, Any]) -> dict[str, Any]:
    # redis-py gives the sentinels only the socket_* options unless told otherwise;
    # with TLS the sentinels speak TLS too, and they have credentials of their own.
    wanted = ("socket_", "ssl") if target.tls else ("socket_",)
    sentinel_kwargs = {k: v for k, v in merged.items() if k.startswith(wanted)}
    sentinel_kwargs.update(target.sentinel_auth)
    return sentinel_kwargs


def _sentinel_master(target: RedisTarget, merged: dict[str, Any]) -> redis.Redis:
    master: redis.Redis = _master_for(Sentinel, target, merged)
    return master


def _master_for(
    sentinel_class: Callable[..., Any], target: RedisTarget, merged: dict[str, Any]
) -> Any:
    """The master client of ``target``'s service through a (sync or asyncio) Sentinel.

    redis-py 8.1 leaves ``Sentinel`` and ``master_for`` unannotated and 8.2 annotates
    them: called through ``Callable[..., Any]`` they type-check under both, with no
    ``type: ignore`` that one of them would report as unused."""
    assert target.service_name is not None
    sentinel = sentinel_class(
        list(target.nodes), sentinel_kwargs=_sentinel_kwargs(target, merged), **merged
    )
    master_for: Callable[..., Any] = sentinel.master_for
    return master_for(target.service_name)


@contextmanager
def explain_failures(redacted_url: str) -> Iterator[None]:
    """Turn redis-py's failures to reach or log in to ``redacted_url`` into ConfigErrors."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, RedisClusterException) as exc:
        text, hint = str(exc).lower(), ""
        if isinstance(exc, RedisClusterException) and not any(
            words in text for words in _CLUSTER_UNREACHABLE
        ):
            raise  # a misuse (e.g. a `retry` option), not a failure to reach the cluster
        # A cluster client wraps the node's error: look one level down too.
        if isinstance(exc, AuthenticationError) or isinstance(exc.__cause__, AuthenticationError):
            raise ConfigError(
                f"Redis at {redacted_url} rejected the credentials in the URL ({exc}). "
                "Fix the user and password (redis://user:password@host:port; with only a "
                "password, as in redis://:password@host:port, the user is `default`)."
            ) from exc
        if "cluster mode is not enabled" in text:
            hint = " That server is not a cluster: use redis:// for a single Redis."
        elif "certificate" in text:
            hint = " Add ?ssl_ca_certs=/path/to/ca.pem (or ssl_cert_reqs=none to not verify)."
        raise ConfigError(
            f"Could not reach Redis at {redacted_url}: {exc}{hint} Check the host, port "
            "and scheme, or start a local Redis with `featurestore local up`."
        ) from exc


def _node(url: str, part: str, default_port: int) -> tuple[str, int]:
    parsed = urlsplit(f"//{part}")
    try:
        port = parsed.port or default_port
    except ValueError:
        raise _malformed(url, f"the port in {part!r} is not a number from 0 to 65535") from None
    if not parsed.hostname:
        raise _malformed(url, "a host is missing")
    return unquote(parsed.hostname), port


def _query_options(url: str, query: str) -> dict[str, Any]:
    # Through Callable, like _master_for: typed or not, whatever redis-py's version.
    parse: Callable[[str], dict[str, Any]] = parse_url
    try:
        options = parse(f"redis://?{query}")
    except ValueError as exc:
        raise _malformed(url, str(exc)) from None
    return options


def _malformed(url: str, problem: str) -> ConfigError:
    return ConfigError(
        f"Redis URL {redact_url(url)} is malformed: {problem}. Use one of: {ACCEPTED_FORMS}."
    )

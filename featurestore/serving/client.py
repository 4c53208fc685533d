"""The in-process feature client, sync and asyncio: entity rows in, `OnlineFeatures` out.

One lookup = one Redis round trip for every view asked (`RedisOnlineStore.prepare`
builds the pipeline, `finish` decodes and merges it with the window engine at the
request time). Definitions are resolved once per feature list (`Catalog.resolve`).

Entity rows are accepted as Feast's ``[{"card_id": "c1"}, ...]``, as a mapping of key
to list, or as a Polars, pandas or Arrow frame; every join key the requested views need
must be there, and nothing else.

Invariants: a lookup never writes; Redis failures surface as
`OnlineStoreUnavailableError` (the server answers 503) and the next lookup reconnects.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from featurestore.errors import ConfigError, OnlineStoreUnavailableError
from featurestore.online.connection import connect, connect_async, redact_url
from featurestore.online.layout import Rows
from featurestore.online.lifecycle import ViewState, parse_states, state_key, states_command
from featurestore.online.store import SCRIPTS, RedisOnlineStore
from featurestore.serving.catalog import Catalog
from featurestore.serving.response import OnlineFeatures

Clock = Callable[[], int]  # epoch milliseconds
Entities = Sequence[Mapping[str, Any]] | Mapping[str, Any] | pl.DataFrame | Any
Features = Sequence[str] | str
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, RedisClusterException)
_ATTEMPTS = 3  # lookups in a row a version switch may interrupt
# Lookups fail fast while Redis is away, and the server answers 503 rather than hang.
_TIMEOUTS: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 2.0}


def timeouts() -> dict[str, Any]:
    """Connection options of serving clients: fail fast while Redis is away."""
    return dict(_TIMEOUTS)


def wall_clock() -> int:
    return time.time_ns() // 1_000_000


def entity_rows(entities: Entities, join_keys: Sequence[str]) -> Rows:
    """`entity_frame`, without a frame when every key is text or an integer: then the
    rows are lists by join key (`layout.Rows`), which for the few rows of a lookup cost
    less than any frame."""
    columns = _by_key(entities)
    if columns is None or not _plain(columns):
        return _selected(_frame(entities, columns), join_keys)
    _check_keys(list(columns), join_keys)
    return {k: columns[k] for k in join_keys}


def entity_frame(entities: Entities, join_keys: Sequence[str]) -> pl.DataFrame:
    """Entity rows as a frame of exactly ``join_keys``; a ConfigError naming what is
    missing or unknown otherwise."""
    return _selected(_frame(entities, _by_key(entities)), join_keys)


def _by_key(entities: Entities) -> dict[str, list[Any]] | None:
    """Rows given as a mapping (key to values, or to one value) or as a sequence of
    mappings, as lists by key; None for a frame."""
    if isinstance(entities, pl.DataFrame):
        return None
    if isinstance(entities, Mapping):
        return {k: list(v) if isinstance(v, list | tuple) else [v] for k, v in entities.items()}
    if isinstance(entities, Sequence) and not isinstance(entities, str):
        if not all(isinstance(row, Mapping) for row in entities):
            raise ConfigError("entity rows must be mappings of join key to value")
        names = list(dict.fromkeys(k for row in entities for k in row))
        return {k: [row.get(k) for row in entities] for k in names}
    return None


def _plain(columns: dict[str, list[Any]]) -> bool:
    """Whether ``columns`` are even and each all text or all integers within 64 bits
    (None allowed): keys a lookup reads without a frame."""
    if not columns or len({len(v) for v in columns.values()}) != 1:
        return False  # no keys, or uneven columns: the frame says what is wrong
    for values in columns.values():
        kinds = {type(v) for v in values} - {type(None)}
        if kinds == {int}:
            if not all(v is None or -(2**63) <= v < 2**63 for v in values):
                return False
        elif kinds != {str}:
            return False
    return True


def _frame(entities: Entities, columns: dict[str, list[Any]] | None) -> pl.DataFrame:
    """The rows as a frame: ``entities`` itself, its ``columns`` (`_by_key`), or a
    pandas or Arrow frame read."""
    if isinstance(entities, pl.DataFrame):
        return entities
    if columns is not None:
        return _columns(columns)
    try:
        frame = pl.from_pandas(entities) if _is_pandas(entities) else pl.from_arrow(entities)
    except (TypeError, ValueError):
        frame = None
    if not isinstance(frame, pl.DataFrame):
        raise ConfigError(
            f"cannot read entity rows from a {type(entities).__name__}; pass a list of "
            "dicts, a dict of lists, or a Polars, pandas or Arrow frame"
        )
    return frame


def _selected(frame: pl.DataFrame, join_keys: Sequence[str]) -> pl.DataFrame:
    """``frame``'s columns, exactly ``join_keys``; a ConfigError otherwise."""
    _check_keys(frame.columns, join_keys)
    if frame.columns == list(join_keys):  # already as asked: no Polars query
        return frame
    return frame.select(join_keys)


def _check_keys(columns: Sequence[str], join_keys: Sequence[str]) -> None:
    missing = [k for k in join_keys if k not in columns]
    unknown = [c for c in columns if c not in join_keys]
    if missing or unknown:
        problems = [f"missing join keys {missing}" if missing else "",
                    f"unknown columns {unknown}" if unknown else ""]  # fmt: skip
        raise ConfigError(
            f"entity rows: {'; '.join(p for p in problems if p)}; these features need "
            f"exactly the join keys {list(join_keys)}"
        )


def _columns(columns: dict[str, list[Any]]) -> pl.DataFrame:
    """Columns of key values; a column Polars cannot type (mixed types, integers past
    64 bits) becomes the values' text, which is what a key is (`entity_keys`)."""
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ConfigError("every join key needs as many values as the others")
    series = []
    for name, values in columns.items():
        try:
            series.append(pl.Series(name, values))
        except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
            series.append(pl.Series(name, [_key_text(v) for v in values], dtype=pl.String))
    return pl.DataFrame(series)


def _key_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | float):  # Polars' own text for them, as a typed key casts
        text: str = pl.Series([value]).cast(pl.String)[0]
        return text
    if isinstance(value, int):
        return str(value)
    raise ConfigError(f"a join key value must be text or a number, not {type(value).__name__}")


def _is_pandas(value: Any) -> bool:
    return type(value).__module__.startswith("pandas")


class FeatureClient:
    """Online features by key, in-process; one Redis round trip per lookup."""

    def __init__(self, catalog: Catalog, store: RedisOnlineStore, *, clock: Clock = wall_clock):
        self.catalog = catalog
        self.store = store
        self.clock = clock

    @classmethod
    def connect(
        cls,
        definitions: str | Path = "consumers",
        *,
        redis_url: str | None = None,
        clock: Clock = wall_clock,
    ) -> FeatureClient:
        """A client for the views declared in ``definitions``, reading the Redis at
        ``redis_url`` (default: the definitions' online sink, then
        $FEATURESTORE_REDIS_URL)."""
        catalog = Catalog.load(definitions)
        url = redis_url_for(catalog, redis_url)
        store = RedisOnlineStore(connect(url, **_TIMEOUTS), catalog.join_keys, catalog.prefix)
        return cls(catalog, store, clock=clock)

    def get_online_features(
        self, entities: Entities, features: Features, *, full_feature_names: bool = False
    ) -> OnlineFeatures:
        """``features`` (``view:feature`` refs, or a feature service's name) of each
        entity row, at the client's clock."""
        resolved = self.catalog.resolve(features, full_names=full_feature_names)
        lookup = _Lookup(self.catalog, self.store, features, full_feature_names,
                         entity_rows(entities, resolved.join_keys))  # fmt: skip
        for _ in range(_ATTEMPTS):
            commands = lookup.commands()
            at = self.clock()
            try:
                replies = self.store.send(commands)
            except _UNAVAILABLE as exc:
                raise _unavailable(exc) from exc
            if (found := lookup.finish(replies, at)) is not None:
                return found
        raise lookup.switching()

    def ping(self) -> bool:
        try:
            return bool(self.store.client.ping())
        except (*_UNAVAILABLE, RedisError):
            return False

    def close(self) -> None:
        self.store.client.close()


class AsyncFeatureClient:
    """`FeatureClient` for asyncio services: the round trip is awaited (redis.asyncio),
    the decode and merge (a few milliseconds of Polars) run inline."""

    def __init__(self, catalog: Catalog, client: Any, *, clock: Clock = wall_clock) -> None:
        self.catalog = catalog
        self.client = client
        # The store only prepares commands and finishes replies here: it never sends.
        self.store = RedisOnlineStore(client, catalog.join_keys, catalog.prefix)
        self.clock = clock

    @classmethod
    def connect(
        cls,
        definitions: str | Path = "consumers",
        *,
        redis_url: str | None = None,
        clock: Clock = wall_clock,
    ) -> AsyncFeatureClient:
        catalog = Catalog.load(definitions)
        client = connect_async(redis_url_for(catalog, redis_url), **_TIMEOUTS)
        return cls(catalog, client, clock=clock)

    async def get_online_features(
        self, entities: Entities, features: Features, *, full_feature_names: bool = False
    ) -> OnlineFeatures:
        resolved = self.catalog.resolve(features, full_names=full_feature_names)
        rows = entity_rows(entities, resolved.join_keys)
        return await self.lookup(features, rows, full_feature_names=full_feature_names)

    async def lookup(
        self, features: Features, entities: Rows, *, full_feature_names: bool = False
    ) -> OnlineFeatures:
        """A lookup of entity rows already checked by `entity_rows`."""
        lookup = _Lookup(self.catalog, self.store, features, full_feature_names, entities)
        for _ in range(_ATTEMPTS):
            commands = lookup.commands()
            at = self.clock()
            try:
                replies = await self._pipelined(commands)
            except _UNAVAILABLE as exc:
                raise _unavailable(exc) from exc
            if (found := lookup.finish(replies, at)) is not None:
                return found
        raise lookup.switching()

    async def _pipelined(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            try:
                return list(await pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                for script in SCRIPTS:  # Redis restarted or flushed its scripts
                    await self.client.script_load(script)
        raise AssertionError("unreachable")

    async def view_states(self) -> dict[str, ViewState]:
        """Every view's lifecycle state (active, shadow, previous, retired versions)."""
        try:
            raw = await self.client.hgetall(state_key(self.catalog.prefix))
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
        return {name.decode(): ViewState.from_json(value) for name, value in raw.items()}

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (*_UNAVAILABLE, RedisError, OSError):
            return False

    async def aclose(self) -> None:
        await self.client.aclose()


class _Lookup:
    """One lookup's round trips. Each reads the served versions of the views asked for
    by name first (`lifecycle.states_command`), then their tiles, in ONE pipeline; when
    a promotion or rollback happened since the catalog last saw the versions, the values
    are thrown away and the lookup runs again with the new versions. So every answer
    reads one version per view, the one served when its round trip began, and a switch
    reaches every client on its next lookup."""

    def __init__(
        self,
        catalog: Catalog,
        store: RedisOnlineStore,
        features: Features,
        full_names: bool,
        entities: Rows,
    ) -> None:
        self.catalog, self.store, self.entities = catalog, store, entities
        self.features, self.full_names = features, full_names

    def commands(self) -> list[tuple[Any, ...]]:
        self.resolved = self.catalog.resolve(self.features, full_names=self.full_names)
        self.names = [name for name, _ in self.resolved.served]
        self.prepared = self.store.prepare(self.resolved.requests, self.entities)
        head = [states_command(self.catalog.prefix, self.names)] if self.names else []
        return head + self.prepared.commands

    def finish(self, replies: list[Any], at: int) -> OnlineFeatures | None:
        """The answer, or None when the versions read are no longer the served ones."""
        if self.names:
            states = parse_states(self.names, replies[0])
            self.catalog.observe({name: state.active for name, state in states.items()})
            if not self.catalog.is_current(self.resolved):
                return None
            replies = replies[1:]
        lookup = self.store.finish(self.prepared, replies, at)
        return OnlineFeatures.of(self.entities, self.resolved, lookup, at)

    def switching(self) -> OnlineStoreUnavailableError:
        return OnlineStoreUnavailableError(
            f"the served versions of {', '.join(self.names)} changed during {_ATTEMPTS} "
            "lookups in a row; retry"
        )


def redis_url_for(catalog: Catalog, given: str | None) -> str:
    """The Redis to read: ``given``, else the definitions' online sink, else the
    settings'."""
    from featurestore.settings import Settings

    url = given or catalog.redis_url or Settings().redis_url
    if url is None:
        raise ConfigError(
            "no Redis to read features from: pass redis_url, set FEATURESTORE_REDIS_URL, "
            "or run `featurestore local up`"
        )
    return url


def _unavailable(exc: Exception) -> OnlineStoreUnavailableError:
    return OnlineStoreUnavailableError(
        f"the online store (Redis) is unavailable: {exc}. Lookups resume by themselves "
        "when it is back; check `featurestore local status` or the Redis URL "
        f"({redact_url(str(getattr(exc, 'url', '')) or 'see settings')})"
    )

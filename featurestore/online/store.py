"""The Redis online store: batches of validated events in, window values at a time out.

Writes (`RedisOnlineStore.apply`): the batch is pre-aggregated in Polars by the window
engine into partials per (entity, source partition, granularity, tile), then applied
with ``apply.lua``, one single-key script call per entity, pipelined. The script keeps
the highest applied offset per source partition in the same hash and applies only
segments above it, so a replay after a crash never counts an event twice. A replay cut
at other batch boundaries than the first attempt (a segment straddling the stored
offset) is resent for that entity one event per segment.

Reads (`RedisOnlineStore.read`, `read_many`): ``read.lua`` returns each entity hash's
tiles as CSV lines, one bulk string per key, pipelined; the lines become an engine
partial frame and `windows_at` merges every window of the view at the request time in
one pass, so values decay as time passes without new events.

Invariants: one key per script call (Redis Cluster works unchanged); a view's keys
carry its version; the hash expires ``view.ttl_ms`` after its last write.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Protocol

import polars as pl
from redis.exceptions import NoScriptError

from featurestore import crashpoints
from featurestore.errors import ConfigError
from featurestore.features.aggregates import (
    TILE,
    Aggregation,
    epoch_ms,
    partial_column,
    tile_partials,
)
from featurestore.features.definitions import FeatureView
from featurestore.features.reads import WindowRead, windows_at
from featurestore.features.sketch import K
from featurestore.features.windows import Window
from featurestore.online.layout import (
    ROW,
    SOURCE,
    TILE_MS,
    Source,
    decode_records,
    decode_sources,
    entity_keys,
    layout,
    meta_key,
    record_expr,
    record_width,
    view_prefix,
)

log = logging.getLogger(__name__)
_APPLY = files("featurestore.online").joinpath("apply.lua").read_text()
_READ = files("featurestore.online").joinpath("read.lua").read_text()
SCRIPTS = (_APPLY, _READ)
_KEY, _OFIELD = "__key", "__ofield"


class OnlineStore(Protocol):
    def apply(self, view: FeatureView, events: pl.DataFrame, time_col: str) -> ApplyStats: ...

    def read(
        self, view: FeatureView, entities: pl.DataFrame, at: int, features: Sequence[str]
    ) -> pl.DataFrame: ...


@dataclass
class ApplyStats:
    entities: int = 0
    segments: int = 0
    skipped_entities: int = 0  # every segment was applied before (a replay)
    resent_entities: int = 0  # straddled the stored offset: resent one event per segment


class RedisOnlineStore:
    """The online store on any Redis client (standalone, Sentinel master or Cluster)."""

    def __init__(
        self,
        client: Any,
        entities: Mapping[str, list[str]],
        prefix: str = "fs",
        pipeline_size: int = 2_000,
    ) -> None:
        self.client = client
        self.entities = dict(entities)  # entity name -> join keys
        self.prefix = prefix.rstrip(":")
        self.pipeline_size = pipeline_size
        # A script's SHA is that of its text: known without asking Redis, which learns the
        # script on the first NOSCRIPT (`_pipelined`). `prepare` and `finish` never use
        # the client, so an asyncio client can send what `prepare` builds.
        self._apply_sha, self._read_sha = _sha(_APPLY), _sha(_READ)
        self._scripts_loaded = False  # by this store: a later NOSCRIPT means Redis lost them
        self._text: dict[tuple[str, int], set[str]] = {}
        self._plans: dict[tuple[tuple[str, int, tuple[str, ...]], ...], _ReadPlan] = {}

    def _load_scripts(self) -> None:
        if self._scripts_loaded:
            log.warning("Redis lost the store's scripts (restarted?); loading them again")
        for script in SCRIPTS:
            self.client.script_load(script)
        self._scripts_loaded = True

    def _meta_key(self, view: FeatureView) -> str:
        return meta_key(self.prefix, view.name, view.version)

    def register(self, view: FeatureView, text_values: set[str]) -> None:
        """Record the view's record layout and which values are text (their ``last`` is a
        string) for readers. A version's layout never changes: records already stored
        could not be merged with records of another layout."""
        kinds = zip(view.values, layout(view), strict=True)
        signature = ",".join(f"{name}:{kind}" for name, kind in kinds)
        meta = self._meta_key(view)
        stored = self.client.hget(meta, "values")
        if stored is not None and stored.decode() != signature:
            raise ConfigError(
                f"view {view.name!r} version {view.version} already has data in Redis with "
                f"values {stored.decode()!r}, not {signature!r}; changing a view's columns "
                "or distinct counts needs a new version (bump `version`)"
            )
        self._text[(view.name, view.version)] = set(text_values)
        self.client.hset(meta, mapping={"values": signature,
                                        "text": ",".join(sorted(text_values))})  # fmt: skip

    def text_values(self, view: FeatureView) -> set[str]:
        cached = self._text.get((view.name, view.version))
        if cached is None:
            raw = self.client.hget(self._meta_key(view), "text")
            if raw is None:  # never registered: nothing written yet, ask again next time
                return set()
            cached = {v for v in raw.decode().split(",") if v}
            self._text[(view.name, view.version)] = cached
        return cached

    # --- writes -------------------------------------------------------------------------

    def apply(self, view: FeatureView, events: pl.DataFrame, time_col: str) -> ApplyStats:
        """Apply validated events (join keys, values, ``_topic/_partition/_offset``)."""
        stats = ApplyStats()
        if events.is_empty():
            return stats
        keyed = events.with_columns(
            (view_prefix(self.prefix, view) + entity_keys(events, self._join_keys(view))).alias(
                _KEY
            ),
            pl.concat_str(
                pl.lit("o:"), pl.col("_topic"), pl.lit(":"), pl.col("_partition").cast(pl.String)
            ).alias(_OFIELD),
        )
        args = self._arguments(view, keyed, time_col, per_event=False)
        straddling = self._send(view, args, stats)
        if straddling:
            stats.resent_entities = len(straddling)
            retry = keyed.filter(pl.col(_KEY).is_in(straddling))
            again = self._send(view, self._arguments(view, retry, time_col, per_event=True), stats)
            if again:  # pragma: no cover - one event per segment cannot straddle
                raise RuntimeError(f"offset guard refused single events for {again[:3]}")
        # The version has online state from now on (what `views promote` checks).
        self.client.hset(self._meta_key(view), "last_write", str(time.time_ns() // 1_000_000))
        return stats

    def _join_keys(self, view: FeatureView) -> list[str]:
        try:
            return self.entities[view.entity]
        except KeyError:
            raise ConfigError(
                f"view {view.name!r} uses entity {view.entity!r}, which this store was not "
                f"given; known entities: {', '.join(sorted(self.entities)) or 'none'}"
            ) from None

    def _arguments(
        self, view: FeatureView, keyed: pl.DataFrame, time_col: str, *, per_event: bool
    ) -> pl.DataFrame:
        """One row per entity key: its segment and prune arguments for ``apply.lua``."""
        text = {n for n, v in view.values.items() if not keyed.schema[v.column].is_numeric()}
        keys = [_OFIELD, "_offset"] if per_event else [_OFIELD]
        per_tile: list[pl.DataFrame] = []
        prunes: list[pl.DataFrame] = []
        for g in view.tiles_ms:
            parts = tile_partials(keyed, [_KEY], time_col, view.values, g,
                                  offset_col="_offset", keys=keys)  # fmt: skip
            span = (
                keyed.with_columns(_tile_of(keyed, time_col, g))
                .group_by([_KEY, *keys, TILE])
                .agg(pl.col("_offset").min().alias("__lo"), pl.col("_offset").max().alias("__hi"))
            )
            segment = parts.join(span, on=[_KEY, *keys, TILE]).sort(_KEY, "__lo")
            per_tile.append(
                segment.select(
                    _KEY,
                    pl.concat_list(
                        pl.col(_OFIELD),
                        pl.col("__lo").cast(pl.String),
                        pl.col("__hi").cast(pl.String),
                        pl.lit(f"{g},") + pl.col(TILE).cast(pl.String),
                        record_expr(view, text),
                    ).alias("__args"),
                )
            )
            keep = -(-view.retention_for(g) // g)  # tiles behind the newest one to keep
            prunes.append(
                segment.group_by(_KEY).agg(
                    pl.concat_list(
                        pl.lit(f"{g},"), (pl.col(TILE).max() - keep).cast(pl.String)
                    ).alias("__prune")
                )
            )
        segments = (
            pl.concat(per_tile).group_by(_KEY, maintain_order=True).agg(pl.col("__args").explode())
        )
        pruning = pl.concat(prunes).group_by(_KEY).agg(pl.col("__prune").explode())
        return segments.join(pruning, on=_KEY, how="left")

    def _send(self, view: FeatureView, args: pl.DataFrame, stats: ApplyStats) -> list[str]:
        """Run ``apply.lua`` per entity, pipelined; returns the keys that straddled."""
        fixed = (str(view.ttl_ms), layout(view))
        straddling: list[str] = []
        rows = list(args.iter_rows())
        for start in range(0, len(rows), self.pipeline_size):
            chunk = rows[start : start + self.pipeline_size]
            results = self._pipelined(
                [
                    _apply_command(self._apply_sha, key, fixed, seg, prune)
                    for key, seg, prune in chunk
                ]
            )
            crashpoints.reach("online.chunk")
            for (key, _, _), result in zip(chunk, results, strict=True):
                stats.entities += 1
                if result == -1:
                    straddling.append(key)
                elif result == 0:
                    stats.skipped_entities += 1
                else:
                    stats.segments += int(result)
        return straddling

    def send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Commands (e.g. from `prepare`) in one pipeline; scripts loaded when Redis
        does not know them."""
        return self._pipelined(commands)

    def _pipelined(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            try:
                return list(pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                # A script's SHA is that of its text: loading it makes the call valid.
                self._load_scripts()
        raise AssertionError("unreachable")

    # --- reads --------------------------------------------------------------------------

    def _keys(
        self, view: FeatureView, entities: pl.DataFrame, known: dict[tuple[str, ...], list[str]]
    ) -> list[str]:
        """The hash key of each entity row of ``view``; the entity parts are computed once
        per set of join keys (``known``), whatever the number of views read."""
        join_keys = self._join_keys(view)
        parts = known.get(tuple(join_keys))
        if parts is None:
            # A null key reads a key that cannot exist: its features are empty, not an error.
            column = entities.select(entity_keys(entities, join_keys).fill_null("\x00"))
            parts = known[tuple(join_keys)] = column.to_series().to_list()
        prefix = view_prefix(self.prefix, view)
        return [prefix + part for part in parts]

    def partials(self, view: FeatureView, entities: pl.DataFrame) -> pl.DataFrame:
        """Every stored tile of each entity row, as engine partials keyed by ``__entity``."""
        commands = [("EVALSHA", self._read_sha, 1, key, f"{row},", "", "")
                    for row, key in enumerate(self._keys(view, entities, {}))]  # fmt: skip
        replies = self._pipelined(commands)
        return decode_records(b"".join(replies), view, self.text_values(view))

    def read(
        self, view: FeatureView, entities: pl.DataFrame, at: int, features: Sequence[str]
    ) -> pl.DataFrame:
        """Window values at ``at`` (epoch ms) for each entity row, one column per feature."""
        return self.read_many([(view, features)], entities, at)[0]

    def read_many(
        self,
        requests: Sequence[tuple[FeatureView, Sequence[str]]],
        entities: pl.DataFrame,
        at: int,
    ) -> list[pl.DataFrame]:
        """`read` for several views in ONE pipelined round trip, decoded by one CSV parse
        and merged by one query (the views' tiles share a frame, see `decode_sources`);
        one frame per request."""
        lookup = self.lookup(requests, entities, at)
        return [lookup.frame(i, features) for i, (_, features) in enumerate(requests)]

    def lookup(
        self,
        requests: Sequence[tuple[FeatureView, Sequence[str]]],
        entities: pl.DataFrame,
        at: int,
    ) -> Lookup:
        """`read_many` with what serving reports beside the values: per request and
        entity row, whether Redis holds the entity and its newest event time."""
        prepared = self.prepare(requests, entities)
        return self.finish(prepared, self._pipelined(prepared.commands), at)

    def prepare(
        self, requests: Sequence[tuple[FeatureView, Sequence[str]]], entities: pl.DataFrame
    ) -> PreparedRead:
        """The commands of a lookup, for any client to send in one pipeline (the async
        client sends them with redis.asyncio), then `finish`. Text value lists not yet
        known are read in the same pipeline."""
        views = [view for view, _ in requests]
        plan = self._plan(tuple((view, tuple(features)) for view, features in requests))
        commands: list[tuple[Any, ...]] = []
        known: dict[tuple[str, ...], list[str]] = {}
        for i, view in enumerate(views):
            before, after = plan.padding[i]
            commands += [("EVALSHA", self._read_sha, 1, key, f"{row},{i},", before, after)
                         for row, key in enumerate(self._keys(view, entities, known))]  # fmt: skip
        unknown = sorted({(v.name, v.version): v for v in views
                          if (v.name, v.version) not in self._text}.items())  # fmt: skip
        commands += [("HGET", self._meta_key(view), "text") for _, view in unknown]
        return PreparedRead(views, plan, entities.height, commands, [v for _, v in unknown])

    def finish(self, prepared: PreparedRead, replies: Sequence[Any], at: int) -> Lookup:
        """Window values at ``at`` from the replies to ``prepared.commands``."""
        reads = len(replies) - len(prepared.unknown_text)
        for view, raw in zip(prepared.unknown_text, replies[reads:], strict=True):
            if raw is not None:  # never registered: nothing written yet, ask again next time
                self._text[(view.name, view.version)] = {v for v in raw.decode().split(",") if v}
        sources = [Source(view, self._text.get((view.name, view.version), set()),
                          _source_prefix(i)) for i, view in enumerate(prepared.views)]  # fmt: skip
        plan = prepared.plan
        partials = decode_sources(b"".join(replies[:reads]), sources)
        rows = pl.DataFrame({ROW: pl.int_range(prepared.rows, eager=True, dtype=pl.Int64)})
        values = windows_at(partials, ROW, rows, at, plan.read, tile_ms_col=TILE_MS,
                            source_col=SOURCE, carry=plan.carry)  # fmt: skip
        views = range(len(prepared.views))
        found = [[bool(n) for n in values.get_column(f"__tiles{i}").to_list()] for i in views]
        newest = [values.get_column(f"__newest{i}").to_list() for i in views]
        return Lookup(values, plan.columns, found, newest)

    def _plan(self, requests: tuple[tuple[FeatureView, tuple[str, ...]], ...]) -> _ReadPlan:
        """The engine's one-pass read of these requests, built once per request shape."""
        key = tuple((view.name, view.version, features) for view, features in requests)
        cached = self._plans.get(key)
        if cached is None:
            cached = self._plans[key] = _ReadPlan.of(requests)
        return cached


@dataclass(frozen=True)
class PreparedRead:
    """A lookup's Redis commands and what `RedisOnlineStore.finish` needs to decode them."""

    views: list[FeatureView]
    plan: _ReadPlan
    rows: int
    commands: list[tuple[Any, ...]]
    unknown_text: list[FeatureView]


@dataclass(frozen=True)
class Lookup:
    """A lookup's answer: every request's feature values in one frame (`column` finds
    one), and per request whether Redis holds each entity row's hash (any tile) and the
    newest event time (epoch ms) among its tiles."""

    values: pl.DataFrame
    columns: Mapping[tuple[int, str], str]  # (request, feature) -> its column in values
    found: list[list[bool]]
    newest_event_ms: list[list[int | None]]

    def column(self, request: int, feature: str) -> pl.Series:
        return self.values.get_column(self.columns[(request, feature)]).alias(feature)

    def frame(self, request: int, features: Sequence[str]) -> pl.DataFrame:
        """One request's features, named as asked."""
        return pl.DataFrame([self.column(request, f) for f in features])


@dataclass(frozen=True)
class _ReadPlan:
    """How one request shape (views and features) is read: the compiled `WindowRead`
    over every view's windows, the output columns per view, and each view's record slot
    padding for ``read.lua``."""

    read: WindowRead
    columns: dict[tuple[int, str], str]  # (request, feature) -> `WindowRead.column`
    padding: tuple[tuple[str, str], ...]
    carry: tuple[pl.Expr, ...]  # per view: tiles held (``__tiles<i>``), newest event time

    @classmethod
    def of(cls, requests: Sequence[tuple[FeatureView, Sequence[str]]]) -> _ReadPlan:
        specs: list[tuple[Window, dict[str, list[Aggregation]]]] = []
        sources: list[int] = []
        sketched: set[str] = set()
        index: dict[tuple[int, Window], int] = {}
        for i, (view, features) in enumerate(requests):
            named = _source_prefix(i)
            wanted = [view.feature(name) for name in features]
            for f in sorted(wanted, key=lambda f: (f.window.tile_ms, f.window.length_ms)):
                if (i, f.window) not in index:
                    index[(i, f.window)] = len(specs)
                    specs.append((f.window, {}))
                    sources.append(i)
                aggs = specs[index[(i, f.window)]][1].setdefault(named + f.column, [])
                if f.function not in aggs:
                    aggs.append(f.function)
            sketched |= {named + n for n, v in view.values.items() if v.distinct}
        read = WindowRead.of(specs, sketched, sources)
        columns = {}
        for i, (view, features) in enumerate(requests):
            for f in (view.feature(name) for name in features):
                column = read.column(index[(i, f.window)], _source_prefix(i) + f.column, f.function)
                columns[(i, f.name)] = column
        widths = [record_width(view) for view, _ in requests]
        padding = tuple(
            ("," * sum(widths[:i]), "," * sum(widths[i + 1 :])) for i in range(len(requests))
        )
        carry = []
        for i, (view, _) in enumerate(requests):
            times = [
                pl.col(partial_column(_source_prefix(i) + n, "last_time")) for n in view.values
            ]
            carry += [(pl.col(SOURCE) == i).sum().alias(f"__tiles{i}"),
                      pl.max_horizontal(times).max().alias(f"__newest{i}")]  # fmt: skip
        return cls(read, columns, padding, tuple(carry))


def _source_prefix(index: int) -> str:
    return f"s{index}."


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


def _apply_command(
    sha: str, key: str, fixed: tuple[str, str], segments: list[str], prune: list[str] | None
) -> tuple[Any, ...]:
    prune = prune or []
    return ("EVALSHA", sha, 1, key, *fixed, len(segments) // 5, len(prune) // 2, K,
            *segments, *prune)  # fmt: skip


def _tile_of(frame: pl.DataFrame, time_col: str, tile_ms: int) -> pl.Expr:
    return epoch_ms(frame.schema, time_col).floordiv(tile_ms).alias(TILE)

"""The Redis online store: batches of validated events in, window values at a time out.

Writes (`RedisOnlineStore.apply`: `prepare_apply`, which computes without Redis, then
`send_apply`): the batch is pre-aggregated in Polars by the window engine into partials
per (entity, source partition, granularity, tile), encoded as binary tile records
(`featurestore.online.layout`); then each entity hash's write token, offset marks and
touched tiles are read (one ``HMGET`` each, pipelined), the new records merged into the
stored ones here (`featurestore.online.merge`, numpy over the whole batch), and the
results written with ``write.lua``: per hash, only if its token is still the one read,
the merged tiles, the new marks and a new token in one ``HSET`` (many hashes per call on
one Redis, one per call on a Cluster, where a script's keys must share a slot). A hash
changed in between is read, merged and written again. Only segments above a hash's
stored offset mark of their partition are merged, so a replay after a crash never
counts an event twice; a replay cut at other batch boundaries than the first attempt (a
segment straddling the mark) is computed again from that entity's events above it.

Reads (`RedisOnlineStore.lookup`, `read`, `read_many`): one ``HVALS`` per (view,
entity), every view of a lookup in ONE pipeline; the binary records are merged into
window values at the request time by the small-read execution
(`featurestore.features.small`), no Polars frame on the way, so values decay as time
passes without new events and a lookup costs little more than its round trip.

Invariants: each entity's hash is written on its own (compare-and-set on its token), so
a call of many keys is only a cheaper way to send them, and a Cluster gets one key per
call; a hash's offset marks are written in the same ``HSET`` as its tiles; a view's keys
carry its version; the hash expires ``view.ttl_ms`` after its last write; a view
version's meta hash names its record format, and data of another format is refused
with the fix (`layout.check_format`).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib.resources import files
from itertools import chain
from typing import Any, Protocol

import hiredis
import numpy as np
import polars as pl
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from featurestore import crashpoints
from featurestore.errors import ConfigError, OnlineMergeError
from featurestore.features.aggregates import SPAN_HI, SPAN_LO, TILE, tile_partials
from featurestore.features.definitions import FeatureView
from featurestore.features.small import LookupPlan
from featurestore.online.layout import (
    FORMAT,
    WRITE_TOKEN,
    Record,
    Rows,
    check_format,
    entity_keys,
    entity_parts,
    layout,
    meta_key,
    row_count,
    tile_records,
    view_prefix,
)
from featurestore.online.merge import damaged, merge_grouped

log = logging.getLogger(__name__)
_WRITE = files("featurestore.online").joinpath("write.lua").read_text()
SCRIPTS = (_WRITE,)
PRUNE_EVERY = 8  # a batch asks to prune a hash when it creates a tile of an index divisible by this
_ATTEMPTS = 20  # reads-merges-writes of a key that another writer keeps changing, at most
_KEY, _OFIELD, _FIELD, _G, _AT = "__key", "__ofield", "__field", "__g", "__at"
_RECORD = "__record"
_META = ("text", "format", "values")  # what a reader learns from a view version's meta hash
_RECEIVE_BUFFER = 8 << 20  # bytes of a connection's socket receive buffer (`_roomy`)
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only
# A script call of the apply: its entity keys and its EVALSHA command.
_Call = tuple[list[str], tuple[Any, ...]]
_CELLS = 4_000_000  # doubles of a lookup's dense array (32 MB): more rows go in chunks


class OnlineStore(Protocol):
    def apply(self, view: FeatureView, events: pl.DataFrame, time_col: str) -> ApplyStats: ...

    def read(
        self, view: FeatureView, entities: pl.DataFrame, at: int, features: Sequence[str]
    ) -> pl.DataFrame: ...


@dataclass(frozen=True)
class PreparedApply:
    """One view's writes of a batch, computed and not yet sent (`prepare_apply`)."""

    record: Record
    keyed: pl.DataFrame  # the events with their hash keys and offset fields
    time_col: str
    arguments: _Segments | None  # the script's arguments; None: no events


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
        keys_per_call: int = 20,
    ) -> None:
        self.client = client
        self.entities = dict(entities)  # entity name -> join keys
        self.prefix = prefix.rstrip(":")
        self.pipeline_size = pipeline_size  # entity keys per round trip
        # Entity keys per script call (not on a Cluster). A script holds Redis for its
        # whole run: 20 entities are about 0.5 ms, which a lookup on the same Redis may
        # wait; 100 were 2.4 ms and no faster to apply (one-off A/B, 2 pairs).
        self.keys_per_call = keys_per_call
        # A script's SHA is that of its text: known without asking Redis, which learns the
        # script on the first NOSCRIPT (`_pipelined`). `prepare` and `finish` never use
        # the client, so an asyncio client can send what `prepare` builds.
        self._write_sha = _sha(_WRITE)
        # Every write sets a new token on its hash: this store's id, then a counter.
        writer, counter = os.urandom(6).hex(), itertools.count(1)
        self._tokens: Callable[[], str] = lambda: f"{writer}.{next(counter)}"
        # One connection's commands (standalone, Sentinel) are packed by hiredis; a
        # cluster client routes each command to its node through its pipeline.
        self._packs = hasattr(client, "connection_pool") and not isinstance(client, RedisCluster)
        self._scripts_loaded = False  # by this store: a later NOSCRIPT means Redis lost them
        self._text: dict[tuple[str, int], set[str]] = {}
        # per request shape: its small-read plan and each feature's Polars type
        self._plans: dict[Any, tuple[LookupPlan, dict[tuple[int, str], pl.DataType]]] = {}
        self._recent: tuple[Any, tuple[LookupPlan, dict[tuple[int, str], pl.DataType]]] | None = (
            None
        )

    def _load_scripts(self) -> None:
        if self._scripts_loaded:
            log.warning("Redis lost the store's scripts (restarted?); loading them again")
        for script in SCRIPTS:
            self.client.script_load(script)
        self._scripts_loaded = True

    def _meta_key(self, view: FeatureView) -> str:
        return meta_key(self.prefix, view.name, view.version)

    def register(self, view: FeatureView, text_values: set[str]) -> None:
        """Record the view's record layout, which values are text (their ``last`` is a
        string) and the record format, for readers. A version's layout never changes:
        records already stored could not be merged with records of another layout, or
        of another format (`layout.check_format` names the fix)."""
        signature = layout(view)
        meta = self._meta_key(view)
        stored, stored_format = self.client.hmget(meta, ["values", "format"])
        if stored is not None:
            check_format(stored_format, view, "cannot write")
        if stored is not None and stored.decode() != signature:
            raise ConfigError(
                f"view {view.name!r} version {view.version} already has data in Redis with "
                f"values {stored.decode()!r}, not {signature!r}; changing a view's columns "
                "or aggregations needs a new version (bump `version`)"
            )
        self._text[(view.name, view.version)] = set(text_values)
        self.client.hset(meta, mapping={"values": signature, "format": str(FORMAT),
                                        "text": ",".join(sorted(text_values))})  # fmt: skip

    def text_values(self, view: FeatureView) -> set[str]:
        cached = self._text.get((view.name, view.version))
        if cached is None:
            meta = self.client.hmget(self._meta_key(view), list(_META))
            if not self._learn(view, *meta):
                return set()
            cached = self._text[(view.name, view.version)]
        return cached

    def _learn(
        self, view: FeatureView, text: bytes | None, stored_format: bytes | None,
        values: bytes | None,
    ) -> bool:  # fmt: skip
        """Cache a view version's text values from its meta hash (`_META`) after checking
        that its records are of the layout this definition reads; False when it was never
        registered (nothing written yet: ask again next time)."""
        if text is None:
            return False
        check_format(stored_format, view, "cannot read")
        expected = layout(view)
        if values is not None and values.decode() != expected:
            raise ConfigError(
                f"cannot read: view {view.name!r} version {view.version} was written with "
                f"values {values.decode()!r}, and this definition reads {expected!r}; the "
                "writer and this reader have different definitions of one version: deploy "
                "the writer's definition here, or give the changed view a new version "
                "(bump `version`) and backfill it"
            )
        self._text[(view.name, view.version)] = {v for v in text.decode().split(",") if v}
        return True

    def record(self, view: FeatureView) -> Record:
        """The record layout of ``view`` as stored (its text values from the meta hash)."""
        return Record(view, frozenset(self.text_values(view)))

    # --- writes -------------------------------------------------------------------------

    def apply(self, view: FeatureView, events: pl.DataFrame, time_col: str) -> ApplyStats:
        """Apply validated events (join keys, values, ``_topic/_partition/_offset``)."""
        return self.send_apply(self.prepare_apply(view, events, time_col))

    def prepare_apply(
        self, view: FeatureView, events: pl.DataFrame, time_col: str
    ) -> PreparedApply:
        """Everything `apply` computes before it writes (keys, tile partials, records,
        script arguments), with no Redis call: raises what applying would raise on the
        events' values, so a consumer can tell the one record a batch fails on."""
        text = self._text.get((view.name, view.version))
        if text is None:  # A value is text when its source column is not numeric.
            text = {n for n, v in view.values.items() if not events.schema[v.column].is_numeric()}
        record = Record(view, frozenset(text))
        if events.is_empty():
            return PreparedApply(record, events, time_col, None)
        keyed = self._keyed(view, events)
        arguments = self._arguments(record, keyed, time_col)
        return PreparedApply(record, keyed, time_col, arguments)

    def send_apply(self, prepared: PreparedApply) -> ApplyStats:
        """Write what `prepare_apply` made: read the touched tiles and offset marks of
        every entity, merge the new records into them (`merge`), write them back with
        ``write.lua`` (compare-and-set on each hash's write token). A hash another writer
        changed in between is read, merged and written again; a key whose segments
        straddle its stored offset is computed again from its events above it."""
        stats = ApplyStats()
        if prepared.arguments is None:
            return stats
        record, view = prepared.record, prepared.record.view
        if (view.name, view.version) not in self._text:  # first write: the layout to meta
            self.register(view, set(record.text_values))
        pending = prepared.arguments
        for attempt in range(_ATTEMPTS):
            changed, straddling = self._send(record, pending, stats, first=attempt == 0)
            again = [pending.only(changed)] if changed else []
            if straddling:
                if attempt == 0:
                    stats.resent_entities = len(straddling)
                again.append(self._above(record, prepared, straddling))
            if not again:
                break
            pending = _Segments.joined(again)
        else:
            raise OnlineMergeError(
                f"view {view.name!r} version {view.version}: "
                f"{pending.rows[_KEY].n_unique()} entity hashes (e.g. "
                f"{pending.rows[_KEY][0]}) changed under this writer {_ATTEMPTS} times in a "
                "row; other writers are writing them without pause (another consumer group "
                "on the same view version?). The batch is not committed; stop the other "
                "writer, then start the consumer again"
            )
        # The version has online state from now on (what `views promote` checks).
        self.client.hset(self._meta_key(view), "last_write", str(time.time_ns() // 1_000_000))
        return stats

    def _above(
        self, record: Record, prepared: PreparedApply, marks: dict[str, dict[str, int]]
    ) -> _Segments:
        """The segments of the keys in ``marks`` from their events above each stored
        offset mark only (a replay cut at other batch boundaries than the first run)."""
        stored = pl.DataFrame(
            [(key, ofield, mark) for key, held in marks.items() for ofield, mark in held.items()],
            schema={_KEY: pl.String, _OFIELD: pl.String, "__mark": pl.Int64}, orient="row",
        )  # fmt: skip
        above = (
            prepared.keyed.filter(pl.col(_KEY).is_in(list(marks)))
            .join(stored, on=[_KEY, _OFIELD], how="left")
            .filter(pl.col("_offset") > pl.col("__mark").fill_null(-1))
            .drop("__mark")
        )
        return self._arguments(record, above, prepared.time_col)

    def _keyed(self, view: FeatureView, events: pl.DataFrame) -> pl.DataFrame:
        """``events`` with each row's hash key and offset field."""
        return events.with_columns(
            (view_prefix(self.prefix, view) + entity_keys(events, self._join_keys(view))).alias(
                _KEY
            ),
            pl.concat_str(
                pl.lit("o:"), pl.col("_topic"), pl.lit(":"), pl.col("_partition").cast(pl.String)
            ).alias(_OFIELD),
        )

    def _join_keys(self, view: FeatureView) -> list[str]:
        try:
            return self.entities[view.entity]
        except KeyError:
            raise ConfigError(
                f"view {view.name!r} uses entity {view.entity!r}, which this store was not "
                f"given; known entities: {', '.join(sorted(self.entities)) or 'none'}"
            ) from None

    def _arguments(self, record: Record, keyed: pl.DataFrame, time_col: str) -> _Segments:
        """The segments and prunes of every entity key, column by column. A key's
        segments go granularity after granularity, each by its lowest source offset: the
        order they are merged in."""
        view = record.view
        keys = [_OFIELD]
        segments: list[pl.DataFrame] = []
        prunes: list[pl.DataFrame] = []
        records: list[bytes] = []
        for g in view.tiles_ms:
            segment = tile_partials(keyed, [_KEY], time_col, view.values, g,
                                    offset_col="_offset", keys=keys, spans=True)  # fmt: skip
            segment = segment.sort(_KEY, SPAN_LO)
            segments.append(segment.select(
                _KEY, _OFIELD, SPAN_LO, SPAN_HI, TILE,
                pl.concat_str(pl.lit(f"{g},"), pl.col(TILE).cast(pl.String)).alias(_FIELD),
                pl.lit(g, pl.Int64).alias(_G),
                pl.int_range(len(records), len(records) + segment.height).alias(_AT),
            ))  # fmt: skip
            records += record.encode(segment, g)
            # Per key, the oldest tile of this granularity to keep behind its newest one.
            keep = -(-view.retention_for(g) // g)
            prunes.append(segment.group_by(_KEY).agg(
                pl.lit(f"{g},").alias(_FIELD), (pl.col(TILE).max() - keep).alias(TILE),
                pl.lit(g, pl.Int64).alias(_G),
            ))  # fmt: skip
        rows = pl.concat(segments).sort(_KEY, _G, maintain_order=True)
        stored = pl.Series(_RECORD, records, dtype=pl.Binary)
        return _Segments(
            rows.with_columns(stored.gather(rows[_AT])).drop(_AT, _G),
            pl.concat(prunes).sort(_KEY, _G).drop(_G),
        )

    def _send(
        self, record: Record, segments: _Segments, stats: ApplyStats, *, first: bool
    ) -> tuple[list[str], dict[str, dict[str, int]]]:
        """Read, merge and write every key of ``segments`` once, array by array (no
        Python step per segment); returns the keys another writer changed between the
        read and the write (nothing written to them), and the keys whose segments
        straddle a stored offset mark, with their marks (nothing written to them either).
        """
        read = segments.read()
        replies = self._read(read.commands)
        flat = list(chain.from_iterable(replies))
        marks = np.array([-1 if m is None else int(m) for m in map(flat.__getitem__,
                          read.mark_at.tolist())], dtype=np.int64)  # fmt: skip
        rows = segments.rows
        k, low, high = read.k, rows[SPAN_LO].to_numpy(), rows[SPAN_HI].to_numpy()
        straddles = np.zeros(len(read.keys), dtype=bool)
        straddles[k[(low <= marks) & (high > marks)]] = True
        applied = np.flatnonzero((low > marks) & ~straddles[k])
        touched = np.bincount(k[applied], minlength=len(read.keys))
        if first:
            stats.entities += len(read.keys)
        stats.skipped_entities += int(((touched == 0) & ~straddles).sum())
        straddling = {read.keys[j]: _marks(read.ofields[j], replies[j])
                      for j in np.flatnonzero(straddles).tolist()}  # fmt: skip
        if len(applied) == 0:
            return [], straddling
        # Chains: per touched tile of a key, its stored record (if any), then its new
        # ones in row order (granularity, then lowest source offset).
        order = applied[np.lexsort((read.fp[applied], k[applied]))]
        ks, fs = k[order], read.fp[order]
        starts = np.ones(len(order), dtype=bool)
        starts[1:] = (ks[1:] != ks[:-1]) | (fs[1:] != fs[:-1])
        heads = order[starts]
        at = read.stored_at(heads)
        stored = [flat[i] for i in at.tolist()]
        based = np.array([r is not None for r in stored], dtype=bool)
        records: list[bytes] = rows[_RECORD].gather(order).to_list()
        chain_of = np.cumsum(starts) - 1
        followers = np.flatnonzero(~starts | based[chain_of])
        first_new = np.flatnonzero(starts)
        head_records = [s if s is not None else records[j]
                        for s, j in zip(stored, first_new.tolist(), strict=True)]  # fmt: skip
        bad = damaged(record, [s for s in stored if s is not None])
        if bad:
            raise _merge_error(record.view, read.keys[int(k[heads[based][bad[0]]])])
        merged = merge_grouped(record, head_records, chain_of[followers],
                               [records[j] for j in followers.tolist()])  # fmt: skip
        tiles = rows[TILE].to_numpy()[heads]
        created = np.zeros(len(read.keys), dtype=bool)
        created[k[heads[~based & (tiles % PRUNE_EVERY == 0)]]] = True
        tokens = [flat[b] or b"" for b in read.base.tolist()]
        writes = read.writes(
            rows,
            segments.prunes,
            applied=applied,
            heads=heads,
            merged=merged,
            created=created,
            tokens=tokens,
            new=self._tokens,
        )
        changed = self._write(record, writes)
        written = np.ones(len(read.keys), dtype=bool)
        written[[read.number[key] for key in changed]] = False
        stats.segments += int(touched[written].sum())
        return changed, straddling

    def _write(self, record: Record, writes: list[tuple[str, list[Any]]]) -> list[str]:
        """``write.lua`` over every key's arguments, many keys per call on one Redis (one
        per call on a Cluster, where a script's keys must share a slot), streamed;
        returns the keys another writer changed since they were read."""
        per_call = self.keys_per_call if self._packs else 1
        ttl = str(record.view.ttl_ms)
        calls: list[_Call] = []
        for a in range(0, len(writes), per_call):
            part = writes[a : a + per_call]
            keys = [key for key, _ in part]
            calls.append((keys, ("EVALSHA", self._write_sha, len(keys), *keys, ttl,
                                 *chain.from_iterable(args for _, args in part))))  # fmt: skip
        per_pipeline = max(1, self.pipeline_size // per_call)
        chunks = [calls[i : i + per_pipeline] for i in range(0, len(calls), per_pipeline)]
        changed: list[str] = []

        def take(index: int, replies: list[Any]) -> None:
            crashpoints.reach("online.chunk")
            for (keys, _), results in zip(chunks[index], replies, strict=True):
                changed.extend(key for key, written in zip(keys, results, strict=True)
                               if not written)  # fmt: skip

        commands = [[command for _, command in chunk] for chunk in chunks]
        if self._packs:
            self._streamed(commands, take)
        else:
            for i, chunk in enumerate(commands):
                take(i, self._pipelined(chunk))
        return changed

    def _read(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The replies of ``commands`` (reads), streamed in pipelines of
        ``pipeline_size``."""
        size = self.pipeline_size
        chunks = [commands[i : i + size] for i in range(0, len(commands), size)]
        replies: list[Any] = []
        if self._packs:
            self._streamed(chunks, lambda _, got: replies.extend(got))
        else:
            for chunk in chunks:
                replies += self._pipelined(chunk)
        return replies

    def _streamed(
        self, chunks: list[list[tuple[Any, ...]]], take: Callable[[int, list[Any]], None]
    ) -> None:
        """Every chunk's commands on one connection, each chunk in one write, the next
        chunk sent before this one's replies are taken (`_stream`): Redis runs one chunk
        while this process reads the replies of the one before and packs the one after,
        on the machine's other core. A broken connection is retried by the client's
        retry policy from the first chunk not taken (a write sent again finds the token
        it set, and is read and merged again: nothing counts twice);
        scripts Redis lost (a restart) are loaded again, once."""
        done = 0

        def run() -> None:
            nonlocal done
            for replies in _stream(connection, chunks[done:]):
                take(done, replies)
                done += 1

        connection = self.client.connection_pool.get_connection()
        try:
            for attempt in (1, 2):
                try:
                    connection.retry.call_with_retry(run, lambda _: connection.disconnect())
                    return
                except NoScriptError:
                    if attempt == 2:
                        raise
                    self._load_scripts()
        finally:
            self.client.connection_pool.release(connection)

    def send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Commands (e.g. from `prepare`) in one pipeline; scripts loaded when Redis
        does not know them."""
        return self._pipelined(commands)

    def _pipelined(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        for attempt in (1, 2):
            try:
                if self._packs:
                    return _packed(self.client, commands)
                pipe = self.client.pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*command)
                return _raise_first(commands, list(pipe.execute(raise_on_error=False)))
            except NoScriptError:
                if attempt == 2:
                    raise
                # A script's SHA is that of its text: loading it makes the call valid.
                self._load_scripts()
        raise AssertionError("unreachable")

    # --- reads --------------------------------------------------------------------------

    def _keys(
        self, view: FeatureView, entities: Rows, known: dict[tuple[str, ...], list[str]]
    ) -> list[str]:
        """The hash key of each entity row of ``view``; the entity parts are computed once
        per set of join keys (``known``), whatever the number of views read."""
        join_keys = self._join_keys(view)
        parts = known.get(tuple(join_keys))
        if parts is None:
            # A null key reads a key that cannot exist: its features are empty, not an error.
            parts = known[tuple(join_keys)] = entity_parts(entities, join_keys)
        prefix = view_prefix(self.prefix, view)
        return [prefix + part for part in parts]

    def partials(self, view: FeatureView, entities: pl.DataFrame) -> pl.DataFrame:
        """Every stored tile of each entity row, as engine partials keyed by ``__entity``
        (for the Polars engine and tools; lookups never build this frame)."""
        keys = self._keys(view, entities, {})
        tiles = [tile_records(reply) for reply in self._pipelined([("HVALS", k) for k in keys])]
        rows = [row for row, held in enumerate(tiles) for _ in held]
        return self.record(view).frame([r for held in tiles for r in held], rows)

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
        """`read` for several views in ONE pipelined round trip; one frame per request."""
        lookup = self.lookup(requests, entities, at)
        return [lookup.frame(i, features) for i, (_, features) in enumerate(requests)]

    def lookup(
        self,
        requests: Sequence[tuple[FeatureView, Sequence[str]]],
        entities: Rows,
        at: int,
    ) -> Lookup:
        """`read_many` with what serving reports beside the values: per request and
        entity row, whether Redis holds the entity and its newest event time."""
        prepared = self.prepare(requests, entities)
        return self.finish(prepared, self._pipelined(prepared.commands), at)

    def prepare(
        self, requests: Sequence[tuple[FeatureView, Sequence[str]]], entities: Rows
    ) -> PreparedRead:
        """The commands of a lookup, for any client to send in one pipeline (the async
        client sends them with redis.asyncio), then `finish`: one ``HVALS`` per view and
        entity row, and the meta of views whose text values are not known yet."""
        commands: list[tuple[Any, ...]] = []
        known: dict[tuple[str, ...], list[str]] = {}
        for view, _ in requests:
            commands += [("HVALS", key) for key in self._keys(view, entities, known)]
        unknown = sorted({(v.name, v.version): v for v, _ in requests
                          if (v.name, v.version) not in self._text}.items())  # fmt: skip
        commands += [("HMGET", self._meta_key(view), *_META) for _, view in unknown]
        return PreparedRead(
            _asked(requests), row_count(entities), commands, [v for _, v in unknown]
        )

    def finish(self, prepared: PreparedRead, replies: Sequence[Any], at: int) -> Lookup:
        """Window values at ``at`` from the replies to ``prepared.commands``, merged by
        the small-read execution (`featurestore.features.small`)."""
        reads = len(replies) - len(prepared.unknown_text)
        for view, meta in zip(prepared.unknown_text, replies[reads:], strict=True):
            self._learn(view, *meta)
        n = prepared.rows
        plan, types = self._plan(prepared.requests)
        tiles = [tile_records(reply) for reply in replies[:reads]]  # per (request, row)
        # Rows in chunks that keep the plan's dense array near _CELLS doubles.
        step = max(1, _CELLS // plan.cells_per_row)
        views = len(prepared.requests)

        def rows(start: int) -> list[list[list[bytes]]]:
            stop = min(n, start + step)
            return [tiles[i * n + start : i * n + stop] for i in range(views)]

        got, found, newest = plan.run(rows(0), at)
        for start in range(step, n, step):  # more rows than one chunk
            more, held, times = plan.run(rows(start), at)
            for i in range(views):
                for column, extra in zip(got[i], more[i], strict=True):
                    column.extend(extra)
                found[i] += held[i]
                newest[i] += times[i]
        values = dict(zip(plan.outputs, [column for columns in got for column in columns],
                          strict=True))  # fmt: skip
        return Lookup(values, types, found, newest)

    def _plan(
        self, requests: tuple[tuple[FeatureView, tuple[str, ...]], ...]
    ) -> tuple[LookupPlan, dict[tuple[int, str], pl.DataType]]:
        """The small-read plan of these requests and each feature's type, made once per
        shape."""
        recent = self._recent
        if recent is not None and recent[0] is requests:  # the same catalog request again
            return recent[1]
        texts = tuple(frozenset(self._text.get((v.name, v.version), ())) for v, _ in requests)
        key = (tuple((v.name, v.version, f) for v, f in requests), texts)
        cached = self._plans.get(key)
        if cached is None:
            plan = LookupPlan.of([(view, features, Record(view, text))
                                  for (view, features), text in zip(requests, texts,
                                                                    strict=True)])  # fmt: skip
            types = {(i, f.name): _dtype(f.function, f.column, record)
                     for i, (record, features) in enumerate(zip(plan.records, plan.features,
                                                                strict=True))
                     for f in features}  # fmt: skip
            cached = self._plans[key] = (plan, types)
        if all((v.name, v.version) in self._text for v, _ in requests):  # final: texts known
            self._recent = (requests, cached)
        return cached


def _asked(
    requests: Sequence[tuple[FeatureView, Sequence[str]]],
) -> tuple[tuple[FeatureView, tuple[str, ...]], ...]:
    """The requests as tuples; a tuple of tuples (a catalog's `Resolved`) is kept as is,
    so the store's recent plan is found by identity."""
    if isinstance(requests, tuple) and all(type(f) is tuple for _, f in requests):
        return requests
    return tuple((view, tuple(features)) for view, features in requests)


def _dtype(function: str, column: str, record: Record) -> pl.DataType:
    if function in ("count", "distinct"):
        return pl.Int64()
    if function == "last" and column in record.text_values:
        return pl.String()
    return pl.Float64()


@dataclass(frozen=True)
class PreparedRead:
    """A lookup's Redis commands and what `RedisOnlineStore.finish` needs to decode them."""

    requests: tuple[tuple[FeatureView, tuple[str, ...]], ...]
    rows: int
    commands: list[tuple[Any, ...]]
    unknown_text: list[FeatureView]

    @property
    def views(self) -> list[FeatureView]:
        return [view for view, _ in self.requests]


@dataclass(frozen=True)
class Lookup:
    """A lookup's answer: per (request, feature) its values per entity row (plain
    Python: `column` and `frame` make Polars of them on demand), and per request whether
    Redis holds each entity row's hash (any tile) and the newest event time (epoch ms)
    among its tiles."""

    values: Mapping[tuple[int, str], list[Any]]
    types: Mapping[tuple[int, str], pl.DataType]
    found: list[list[bool]]
    newest_event_ms: list[list[int | None]]

    def column(self, request: int, feature: str) -> pl.Series:
        key = (request, feature)
        return pl.Series(feature, self.values[key], dtype=self.types[key])

    def frame(self, request: int, features: Sequence[str]) -> pl.DataFrame:
        """One request's features, named as asked."""
        return pl.DataFrame([self.column(request, f) for f in features])


def _packed(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """``commands`` in one round trip on one of the client's connections, each packed by
    hiredis in C: what a redis-py pipeline does, without its Python encoding of every
    argument (most of a batch's apply time with thousands of script calls). Replies are
    Redis' own (no redis-py response callbacks: the store sends EVALSHA, HVALS and
    HMGET); the first error reply is raised after every reply is read. A broken
    connection is retried by the client's retry policy, as a pipeline is."""
    # One buffer, one write: redis-py writes a list of packed commands one syscall each.
    packed = b"".join([hiredis.pack_command(command) for command in commands])
    connection = client.connection_pool.get_connection()

    def send() -> list[Any]:
        connection.send_packed_command([packed])  # connects when not connected
        _roomy(connection)
        return _replies(connection, len(commands))

    try:
        replies: list[Any] = connection.retry.call_with_retry(
            send, lambda _: connection.disconnect()
        )
    except (RedisConnectionError, RedisTimeoutError, OSError):
        connection.disconnect()
        raise
    finally:
        client.connection_pool.release(connection)
    return _raise_first(commands, replies)


def _stream(connection: Any, chunks: list[list[tuple[Any, ...]]]) -> Iterator[list[Any]]:
    """Each chunk's replies (its first error raised once they are all read), with up to
    two chunks sent ahead: the next chunk goes out before a chunk's replies are handed
    over. On any error, or when the caller stops early, the connection is dropped: the
    replies of a chunk still in flight must never be read as another command's."""
    sent: deque[list[tuple[Any, ...]]] = deque()
    upcoming = iter(chunks)

    def send_next() -> None:
        chunk = next(upcoming, None)
        if chunk is not None:
            connection.send_packed_command([b"".join([hiredis.pack_command(c) for c in chunk])])
            _roomy(connection)
            sent.append(chunk)

    try:
        send_next()
        send_next()
        while sent:
            chunk = sent.popleft()
            checked = _raise_first(chunk, _replies(connection, len(chunk)))
            send_next()
            yield checked
    except BaseException:
        connection.disconnect()
        raise


def _replies(connection: Any, n: int) -> list[Any]:
    """The next ``n`` replies on ``connection``, an error reply kept in its place (so
    every reply of a round trip is read before one is raised)."""
    replies: list[Any] = []
    for _ in range(n):
        try:
            replies.append(connection.read_response())
        except ResponseError as error:
            replies.append(error)
    return replies


def _raise_first(commands: list[tuple[Any, ...]], replies: list[Any]) -> list[Any]:
    """``replies``, or the first error among them, raised with its command attached (for
    `_merge_error`) once every reply is read."""
    for command, reply in zip(commands, replies, strict=True):
        if isinstance(reply, ResponseError):
            reply.featurestore_command = command  # type: ignore[attr-defined]
            raise reply
    return replies


def _roomy(connection: Any) -> None:
    """Tune the connection's socket for a round trip's replies, which come at once, up
    to megabytes (a 100-entity lookup: 1.2 MB):

    - a receive buffer of `_RECEIVE_BUFFER`, once per socket: in the kernel's default
      one the TCP window closed, and on loopback (64 KB segments) reopened only on a
      delayed ACK, which stalled 1 in 30 such round trips by 20-40 ms;
    - quick ACKs (Linux's TCP_QUICKACK, which the kernel turns off again by itself, so
      on every round trip): with delayed ACKs, Redis' sending of a large reply waited
      ~25 ms for them in about 1 lookup in 50 (both measured with one-off scripts,
      wall time against the thread's CPU time).

    The kernel caps the buffer at net.core.rmem_max and allocates only what is queued."""
    sock: Any = getattr(connection, "_sock", None)  # redis-py's socket, None when closed
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    if getattr(connection, "_featurestore_roomy", None) is not sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
        connection._featurestore_roomy = sock
    if _QUICKACK is not None:
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)


def _merge_error(view: FeatureView, key: str) -> OnlineMergeError:
    """A stored record of ``key`` is not of the view's layout: which key, and what to
    do."""
    return OnlineMergeError(
        f"merging the batch into Redis failed on {key} of view {view.name!r} version "
        f"{view.version}: it holds a tile record that is not of this version's layout; "
        "the batch is not committed, and the consumer stops rather than skip it. The hash "
        "holds a record written by hand, or by another layout: delete that key, backfill "
        f"the view (`featurestore backfill {view.name} --version {view.version}`), then "
        "start the consumer again"
    )


def _marks(ofields: list[str], reply: list[Any]) -> dict[str, int]:
    """A key's stored offset marks, from its read (`_Segments.reads`); -1: none."""
    return {f: -1 if m is None else int(m) for f, m in zip(ofields, reply[1:], strict=False)}


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class _Segments:
    """One view's writes of a batch: its segments (``rows``: key, offset field, lowest
    and highest source offset, tile, tile field, record), key after key, each key's
    granularity after granularity and by lowest offset; and its prunes (per key and
    granularity, the tile field prefix and the oldest tile index to keep)."""

    rows: pl.DataFrame
    prunes: pl.DataFrame

    def only(self, keys: Sequence[str]) -> _Segments:
        return _Segments(self.rows.filter(pl.col(_KEY).is_in(keys)),
                         self.prunes.filter(pl.col(_KEY).is_in(keys)))  # fmt: skip

    @staticmethod
    def joined(parts: Sequence[_Segments]) -> _Segments:
        """Segments of disjoint keys, together."""
        return _Segments(pl.concat([p.rows for p in parts]), pl.concat([p.prunes for p in parts]))

    def read(self) -> _Read:
        """The ``HMGET`` of each key's write token, offset marks and touched tiles, and
        where each segment's mark and stored tile are in the replies."""
        k = self.rows[_KEY].rle_id().to_numpy().astype(np.int64)
        first = np.flatnonzero(np.diff(k, prepend=-1))
        keys: list[str] = self.rows[_KEY].gather(first).to_list()
        op, ofields, m = _places(k, self.rows[_OFIELD], len(keys))
        fp, fields, n = _places(k, self.rows[_FIELD], len(keys))
        o_end, f_end = np.cumsum(m).tolist(), np.cumsum(n).tolist()
        commands = [("HMGET", key, WRITE_TOKEN, *ofields[a - i : a], *fields[b - j : b])
                    for key, a, i, b, j in zip(keys, o_end, m.tolist(), f_end, n.tolist(),
                                               strict=True)]  # fmt: skip
        base = np.concatenate(([0], np.cumsum(1 + m + n)[:-1]))
        per_key = [ofields[a - i : a] for a, i in zip(o_end, m.tolist(), strict=True)]
        return _Read(keys, per_key, commands, k, fp, base, base[k] + 1 + op, m)


def _places(
    k: np.ndarray, values: pl.Series, keys: int
) -> tuple[np.ndarray, list[Any], np.ndarray]:
    """Per row, the place of its value among its key's distinct values (sorted); the
    distinct values of every key, key after key; how many each key has."""
    by = pl.DataFrame({"k": k, "v": values}).with_row_index("i").sort("k", "v")
    ks, vs = by["k"].to_numpy(), by["v"]
    new = np.ones(len(ks), dtype=bool)
    new[1:] = (ks[1:] != ks[:-1]) | (vs.slice(1) != vs.slice(0, len(vs) - 1)).to_numpy()
    dense = np.cumsum(new) - 1
    counts = np.bincount(ks[new], minlength=keys)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    place = np.empty(len(ks), dtype=np.int64)
    place[by["i"].to_numpy()] = dense - starts[ks]
    return place, vs.filter(new).to_list(), counts


@dataclass(frozen=True)
class _Read:
    """A batch's reads (`_Segments.read`): per key its offset fields and ``HMGET``; per
    segment its key's number (``k``), its tile's place among the key's (``fp``) and
    where its offset mark is in the flattened replies (``mark_at``)."""

    keys: list[str]
    ofields: list[list[str]]
    commands: list[tuple[Any, ...]]
    k: np.ndarray
    fp: np.ndarray
    base: np.ndarray  # per key: where its replies start in the flattened replies
    mark_at: np.ndarray
    marks: np.ndarray  # per key: how many offset fields it reads

    @cached_property
    def number(self) -> dict[str, int]:
        return {key: j for j, key in enumerate(self.keys)}

    def stored_at(self, segments: np.ndarray) -> np.ndarray:
        """Where the stored record of each segment's tile is in the flattened replies."""
        keys = self.k[segments]
        return np.asarray(self.base[keys] + 1 + self.marks[keys] + self.fp[segments])

    def writes(
        self,
        rows: pl.DataFrame,
        prunes: pl.DataFrame,
        *,
        applied: np.ndarray,
        heads: np.ndarray,
        merged: list[bytes],
        created: np.ndarray,
        tokens: list[bytes],
        new: Callable[[], str],
    ) -> list[tuple[str, list[Any]]]:
        """Per key written, its ``write.lua`` arguments: the write token read, the
        pairs (tiles merged, offset marks, new write token), the prunes when asked."""
        chain_keys = self.k[heads]
        fields: list[str] = rows[_FIELD].gather(heads).to_list()
        marks = (
            pl.DataFrame(
                {
                    "k": self.k[applied],
                    _OFIELD: rows[_OFIELD].gather(applied),
                    "hi": rows[SPAN_HI].gather(applied),
                }
            )
            .group_by("k", _OFIELD)
            .agg(pl.col("hi").max())
            .sort("k", _OFIELD)
        )
        mark_keys = marks["k"].to_numpy()
        mark_pairs = [x for pair in zip(marks[_OFIELD].to_list(), marks["hi"].to_list(),
                                        strict=True) for x in pair]  # fmt: skip
        wanted = [self.keys[j] for j in np.flatnonzero(created).tolist()]
        pruned = prunes.filter(pl.col(_KEY).is_in(wanted))
        by_key: dict[str, list[Any]] = {}  # prune arguments of the keys that asked
        for key, prefix, oldest in pruned.iter_rows():
            by_key.setdefault(key, []).extend((prefix, oldest))
        touched = np.unique(chain_keys)
        chain_at = np.searchsorted(chain_keys, touched).tolist()
        chain_end = np.searchsorted(chain_keys, touched, side="right").tolist()
        mark_at = np.searchsorted(mark_keys, touched).tolist()
        mark_end = np.searchsorted(mark_keys, touched, side="right").tolist()
        tiles = [x for pair in zip(fields, merged, strict=True) for x in pair]
        out = []
        for j, a, b, c, d in zip(touched.tolist(), chain_at, chain_end, mark_at, mark_end,
                                 strict=True):  # fmt: skip
            key, token = self.keys[j], tokens[j]
            extra = by_key.get(key, ())
            args = [token, b - a + d - c + 1, len(extra) // 2]
            args += tiles[2 * a : 2 * b]
            args += mark_pairs[2 * c : 2 * d]
            args += (WRITE_TOKEN, new(), *extra)
            out.append((key, args))
        return out

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

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Protocol

import polars as pl
from redis.exceptions import NoScriptError

from featurestore.errors import ConfigError
from featurestore.features.aggregates import (
    TILE,
    Aggregation,
    epoch_ms,
    tile_partials,
)
from featurestore.features.definitions import FeatureView
from featurestore.features.reads import WindowRead, windows_at
from featurestore.features.sketch import K
from featurestore.online.layout import (
    ROW,
    TILE_MS,
    decode_records,
    entity_keys,
    layout,
    record_expr,
    view_prefix,
)

log = logging.getLogger(__name__)
_APPLY = files("featurestore.online").joinpath("apply.lua").read_text()
_READ = files("featurestore.online").joinpath("read.lua").read_text()
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
        self._apply_sha = self._read_sha = ""
        self._text: dict[tuple[str, int], set[str]] = {}
        self._reads: dict[tuple[str, int, tuple[str, ...]], tuple[WindowRead, list[pl.Expr]]] = {}
        self._load_scripts()

    def _load_scripts(self) -> None:
        self._apply_sha = self.client.script_load(_APPLY)
        self._read_sha = self.client.script_load(_READ)

    def _meta_key(self, view: FeatureView) -> str:
        # Without the trailing ':' of entity keys, so no entity key can be this key.
        return view_prefix(self.prefix, view).removesuffix(":")

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
            for (key, _, _), result in zip(chunk, results, strict=True):
                stats.entities += 1
                if result == -1:
                    straddling.append(key)
                elif result == 0:
                    stats.skipped_entities += 1
                else:
                    stats.segments += int(result)
        return straddling

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
                # A script's SHA is that of its text: loading again makes it valid again.
                log.warning("Redis lost the store's scripts (restarted?); loading them again")
                self._load_scripts()
        raise AssertionError("unreachable")

    # --- reads --------------------------------------------------------------------------

    def _read_commands(self, view: FeatureView, entities: pl.DataFrame) -> list[tuple[Any, ...]]:
        # A null key reads a key that cannot exist: its features are empty, not an error.
        keys = entities.select(
            view_prefix(self.prefix, view)
            + entity_keys(entities, self._join_keys(view)).fill_null("\x00")
        ).to_series()
        return [("EVALSHA", self._read_sha, 1, key, row) for row, key in enumerate(keys)]

    def partials(self, view: FeatureView, entities: pl.DataFrame) -> pl.DataFrame:
        """Every stored tile of each entity row, as engine partials keyed by ``__entity``."""
        replies = self._pipelined(self._read_commands(view, entities))
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
        """`read` for several views in ONE pipelined round trip; one frame per request."""
        commands: list[tuple[Any, ...]] = []
        for view, _ in requests:
            commands += self._read_commands(view, entities)
        replies = self._pipelined(commands)
        n = entities.height
        rows = pl.LazyFrame({ROW: pl.int_range(n, eager=True, dtype=pl.Int64)})
        queries, renames = [], []
        for i, (view, features) in enumerate(requests):
            partials = decode_records(b"".join(replies[i * n : (i + 1) * n]), view,
                                      self.text_values(view))  # fmt: skip
            read, columns = self._compiled(view, tuple(features))
            queries.append(windows_at(partials.lazy(), ROW, rows, at, read, tile_ms_col=TILE_MS))
            renames.append(columns)
        frames = pl.collect_all(queries)
        return [frame.select(columns) for frame, columns in zip(frames, renames, strict=True)]

    def _compiled(
        self, view: FeatureView, features: tuple[str, ...]
    ) -> tuple[WindowRead, list[pl.Expr]]:
        """The engine's one-pass read of these features, built once per (view, features)."""
        key = (view.name, view.version, features)
        cached = self._reads.get(key)
        if cached is None:
            wanted = [view.feature(name) for name in features]
            windows = sorted({f.window for f in wanted}, key=lambda w: (w.tile_ms, w.length_ms))
            specs = []
            for window in windows:
                aggs: dict[str, list[Aggregation]] = {}
                for f in wanted:
                    if f.window == window and f.function not in aggs.get(f.column, []):
                        aggs.setdefault(f.column, []).append(f.function)
                specs.append((window, aggs))
            sketched = {n for n, v in view.values.items() if v.distinct}
            read = WindowRead.of(specs, sketched)
            columns = [
                pl.col(read.column(windows.index(f.window), f.column, f.function)).alias(f.name)
                for f in wanted
            ]
            cached = self._reads[key] = (read, columns)
        return cached


def _apply_command(
    sha: str, key: str, fixed: tuple[str, str], segments: list[str], prune: list[str] | None
) -> tuple[Any, ...]:
    prune = prune or []
    return ("EVALSHA", sha, 1, key, *fixed, len(segments) // 5, len(prune) // 2, K,
            *segments, *prune)  # fmt: skip


def _tile_of(frame: pl.DataFrame, time_col: str, tile_ms: int) -> pl.Expr:
    return epoch_ms(frame.schema, time_col).floordiv(tile_ms).alias(TILE)

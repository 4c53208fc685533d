"""The consumer runtime: micro-batches from Kafka through decode and validation to the
sinks and the dead-letter topic, offsets committed last.

Invariants:
- Every consumed offset ends in exactly one place: a valid row in the sinks, or one
  dead letter. ``in == valid + dead-lettered`` holds after every batch.
- Offsets are committed only after every sink is durable, in the same Kafka transaction
  as the batch's dead letters (see ``checkpoint.py``).
- A dependency that is down (registry, Kafka, the offline store) is retried with backoff
  and a log line; offsets are never skipped. A record that breaks the code itself is
  isolated by processing the batch one record at a time and dead-lettered: no poison
  message stops the consumer.
- Batches are committed before the next poll, so a partition revoked during a poll has
  nothing in flight: revocation needs no flush.
- SIGTERM or Ctrl-C: the batch in hand is finished and committed, then the process
  leaves its group and exits 0.
"""

from __future__ import annotations

import errno
import gc
import logging
import random
import signal
import struct
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import polars as pl
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from redis.exceptions import ClusterDownError, OutOfMemoryError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from featurestore import crashpoints
from featurestore.contracts import parse_contract
from featurestore.contracts.codec import ROW, BatchDecoder
from featurestore.contracts.constraints import compile_checks, split
from featurestore.contracts.contract import parse_duration_ms
from featurestore.contracts.registry.client import RegistryClient
from featurestore.contracts.violations import Reason, Rejection
from featurestore.errors import RegistryUnavailableError
from featurestore.features.definitions import FeatureView
from featurestore.monitor.metrics import (
    BATCH_SECONDS,
    CONSUMER_LAG,
    EVENT_FRESHNESS_SECONDS,
    EVENTS_DEAD_LETTERED,
    EVENTS_IN,
    EVENTS_VALID,
    OFFLINE_WRITE_SECONDS,
    ONLINE_WRITE_SECONDS,
    RETRIES,
)
from featurestore.monitor.probes import Probes
from featurestore.monitor.watch import watch_for
from featurestore.offline import EventWriter, check_readable
from featurestore.online.memory import Memory, check_eviction, memory
from featurestore.online.store import PreparedApply, RedisOnlineStore
from featurestore.stream.checkpoint import Checkpointer, Fenced, TransientCommitError
from featurestore.stream.definition import ConsumerDefinition
from featurestore.stream.dlq import DeadLetter, Headers, SourceRecord, dead_letter
from featurestore.stream.topics import ensure_topics
from featurestore.stream.versions import ComputedViews
from featurestore.stream.watermarks import Watermarks

log = logging.getLogger(__name__)
T = TypeVar("T")
FINAL_FLUSH_S = 30.0  # how long the last monitoring check waits for its alerts to be delivered
RETRYABLE = (
    RegistryUnavailableError,
    TransientCommitError,
    KafkaException,
    OSError,
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    OutOfMemoryError,  # Redis at maxmemory under noeviction: wait until memory is freed
)


class Interrupted(Exception):
    """Stop was asked while waiting on a dependency; nothing of the batch is committed."""


@dataclass
class ConsumerStats:
    events_in: int = 0
    valid: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    batches: int = 0

    @property
    def dead_total(self) -> int:
        return sum(self.dead_lettered.values())


class ConsumerRuntime:
    """One consumer process for one definition."""

    def __init__(
        self,
        definition: ConsumerDefinition,
        kafka: dict[str, Any],
        registry: RegistryClient,
        offline_root: str | None,
        clock: Callable[[], float] = time.time,
        *,
        online: RedisOnlineStore | None = None,
    ) -> None:
        self.definition = definition
        self.kafka = {**kafka, **definition.kafka}
        self.registry = registry
        self.clock = clock
        self.stats = ConsumerStats()
        self.probes = Probes()  # /healthz and /readyz on the metrics port
        self._stop = threading.Event()
        reader = self._retrying(
            "fetch the contract",
            partial(registry.version, definition.subject, definition.contract_version),
        )
        self.contract_version = int(reader["version"])
        contract = parse_contract(reader["schema"])
        if definition.max_future_skew is not None:
            skew = parse_duration_ms("max_future_skew", definition.max_future_skew)
            contract = replace(contract, max_future_skew_ms=skew)
        self.contract = contract
        # LATE_EVENT against the clock: older than the tighter of the contract's max_age
        # and this retention.
        self.retention_ms = parse_duration_ms("retention", definition.retention)
        self.checks = compile_checks(contract)
        self.decoder = BatchDecoder(reader["schema"], registry.schema)
        self.sink = None
        if definition.sinks.offline.enabled and offline_root is not None:
            if contract.event_time is None:
                raise ValueError("the offline sink needs a contract with an event_time")
            self.sink = EventWriter(offline_root, definition.subject, contract.event_time)
            # A contract whose events could not be read with those already stored (a
            # field's type changed beyond Avro's promotions) is refused before any write.
            columns = pl.Schema({k: v for k, v in self.decoder.frame_schema.items() if k != ROW})
            check = partial(check_readable, offline_root, definition.subject, columns,
                            f"contract version {self.contract_version}")  # fmt: skip
            self._retrying("read the offline store's schemas", check)
        self.online = online if definition.sinks.online.enabled else None
        self.views = definition.views if self.online is not None else []
        if self.views:  # a Redis that may evict tiles is refused unless allowed
            assert self.online is not None
            client, allow = self.online.client, definition.sinks.online.allow_eviction
            who = f"consumer {definition.name}"
            self._retrying("read Redis' memory policy",
                           partial(check_eviction, client, allow=allow, who=who))  # fmt: skip
        self.computed: ComputedViews | None = None
        if self.views:
            self._check_views()
            assert self.online is not None
            self.computed = ComputedViews(
                self.views, self.online, who=f"consumer {definition.name}",
                offline_root=offline_root if self.sink is not None else None,
                event_time=contract.event_time or "",
            )  # fmt: skip
            self._retrying("activate the views", self.computed.start)
        fields = [c for c in self.decoder.frame_schema if not c.startswith("_")]
        self.watch = watch_for(definition, contract, fields, self.kafka, self.online)
        if self.watch is not None:
            self._retrying("load the drift baselines", self.watch.start)
        # Feature lateness: behind the partition's watermark by more than the longest
        # retention of this consumer's views -> LATE_EVENT (see watermarks.py).
        self.watermarks = Watermarks(max((v.retention_ms for v in self.views), default=None))
        self.checkpointer = Checkpointer(
            self.kafka, definition.group_id, instance=definition.instance_id
        )
        self.consumer: Consumer | None = None

    def _check_views(self) -> None:
        assert self.online is not None
        if self.contract.event_time is None:
            raise ValueError("feature views need a contract with an event_time")
        schema = self.decoder.frame_schema
        numeric = {name: dtype.is_numeric() for name, dtype in schema.items()}
        for view in self.views:
            view.check_columns(numeric)
            text = {n for n, v in view.values.items() if not numeric[v.column]}
            online = self.online
            self._retrying("register a view", partial(online.register, view, text))

    # --- lifecycle ----------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self, until: Callable[[ConsumerStats], bool] | None = None) -> ConsumerStats:
        """Consume until stopped (or ``until(stats)`` is true after a batch)."""
        handlers = self._install_signal_handlers()
        d = self.definition
        try:  # Kafka may still be coming up: wait for it as for any dependency
            dlqs = {t: d.dlq_for(t) for t in d.topics}
            self._retrying("create the DLQ topics", partial(ensure_topics, self.kafka, dlqs))
            self._retrying("start the transactional producer", self.checkpointer.start)
        except Interrupted:
            _restore(handlers)
            return self.stats
        self.consumer = Consumer(
            {
                **self.kafka,
                "group.id": d.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                **({"group.instance.id": d.instance_id} if d.instance_id else {}),
            }
        )
        self.consumer.subscribe(d.topics, on_assign=_log_assign, on_revoke=self._on_revoke)
        # What start-up made (modules, definitions, clients) lives as long as the process:
        # out of the collector's sight, its full collections stay cheap while batches
        # allocate (one-off A/B: 40-55 ms less per 10k-event batch with two views).
        gc.freeze()
        last_report, reported = time.monotonic(), self.stats.events_in
        self.probes.waiting(None)
        try:
            while not self._stop.is_set():
                msgs = self.consumer.consume(d.batch_size, d.batch_wait_ms / 1000)
                self.probes.beat()
                records = [m for m in msgs if not _skippable(m)]
                if records:
                    crashpoints.reach("poll")
                    try:
                        self.process(records)
                    except Interrupted:
                        break
                if until is not None and until(self.stats):
                    break
                if time.monotonic() - last_report > 5:  # progress: rate and lag
                    rate = (self.stats.events_in - reported) / (time.monotonic() - last_report)
                    last_report, reported = time.monotonic(), self.stats.events_in
                    log.info("%s: %s; %s events/s, lag %s", d.name, self.describe(),
                             f"{rate:,.0f}", self._lag_text())  # fmt: skip
        finally:
            if self.watch is not None and self.stats.events_in:
                self._final_check()
            self.consumer.close()
            self.checkpointer.close()
            _restore(handlers)
        return self.stats

    def describe(self) -> str:
        s = self.stats
        dead = ", ".join(f"{r} {n:,}" for r, n in sorted(s.dead_lettered.items())) or "none"
        return f"{s.events_in:,} in, {s.valid:,} valid, dead-lettered: {dead}"

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: self.stop())
        return previous

    # --- one batch ----------------------------------------------------------------------

    def process(self, records: list[Message]) -> None:
        """Decode, validate, write, dead-letter and commit one batch."""
        started = time.monotonic()
        batch = _Batch.of(records)
        try:
            valid, rejections = self._retrying(
                "decode", partial(self._validate, batch.values, batch.headers)
            )
        except Interrupted:  # _retrying lets no other dependency failure out
            raise
        except Exception as exc:
            log.error("batch of %d failed as a whole; isolating records%s", len(records),
                      _without_values(exc))  # fmt: skip
            valid, rejections = self._validate_one_by_one(batch)
        crashpoints.reach("decode")
        rows = valid.get_column("_row")
        valid = valid.with_columns(
            pl.Series("_topic", batch.topics, pl.String).gather(rows),
            pl.Series("_partition", batch.partitions, pl.Int32).gather(rows),
            pl.Series("_offset", batch.offsets, pl.Int64).gather(rows),
        )
        assert self.consumer is not None
        consumer = self.consumer
        valid, more = self._deliver(valid, batch)
        rejections = sorted([*rejections, *more], key=lambda r: r.row)
        letters = [self._dead_letter(records[r.row], r) for r in rejections]
        offsets = self.watermarks.attach(batch.next_offsets)
        try:
            self._retrying("commit", lambda: self.checkpointer.commit(consumer, letters, offsets))
        except Fenced as exc:
            log.warning("lost the transactional role (%s); rewinding to committed offsets", exc)
            self._rewind()
            return
        crashpoints.reach("commit.done")
        self._count(len(records), valid.height, rejections)
        BATCH_SECONDS.labels(self.definition.name).observe(time.monotonic() - started)
        self._observe(len(records), rejections, valid)

    def _deliver(self, valid: pl.DataFrame, batch: _Batch) -> tuple[pl.DataFrame, list[Rejection]]:
        """The valid rows through the steps after validation; returns the rows delivered
        and the dead letters of those steps (LATE_EVENT, PROCESSING_ERROR).

        Everything computed from the rows (the watermark split, each Parquet file's
        bytes, each view's script arguments) is computed first, isolated (`_isolated`):
        a record it cannot take is dead-lettered and the rest computed again, before
        anything is written. So a poison record is in one place, its dead letter, and
        the writes that follow fail only when a dependency does (retried)."""
        consumer = self.consumer
        assert consumer is not None
        late: list[Rejection] = []
        poisoned: list[Rejection] = []
        if self.views:
            event_time = self.contract.event_time or ""
            seeds = self._retrying(
                "read watermarks", partial(self.watermarks.seeds, consumer, batch.next_offsets)
            )
            split = partial(self.watermarks.split, event_time=event_time, seeds=seeds)
            (valid, late), _, poisoned = self._isolated("split by watermark", valid, split, batch)
        views: list[FeatureView] = []
        if self.computed is not None:
            computed, first = self.computed, batch.first_offsets
            views = self._retrying("read the views' state", lambda: computed.current(first))
        prepare = partial(self._prepare_writes, views=views)
        (files, applies), valid, poison = self._isolated("prepare the writes", valid, prepare,
                                                         batch)  # fmt: skip
        poisoned += poison
        if self.sink is not None:
            sink, writing = self.sink, time.monotonic()
            self._retrying("write offline events", lambda: sink.store(files))
            if self.watch is not None:
                self.watch.offline_full(None)  # resolves a full-disk alert: it was written
            OFFLINE_WRITE_SECONDS.labels(self.definition.name).observe(time.monotonic() - writing)
            crashpoints.reach("offline.written")
        if self.computed is not None:
            for prepared in applies:
                self._apply_online(prepared)
            self._online_full(full=False)  # the writes landed: Redis has room again
            crashpoints.reach("online.applied")
        return valid.drop("_row"), [*late, *poisoned]

    def _prepare_writes(
        self, valid: pl.DataFrame, views: list[FeatureView]
    ) -> tuple[list[tuple[Any, bytes]], list[PreparedApply]]:
        """The offline files' bytes and each view's script arguments for ``valid``,
        nothing written."""
        files = self.sink.encode(valid.drop("_row")) if self.sink is not None else []
        online, event_time = self.online, self.contract.event_time or ""
        applies = []
        for view in views:
            assert online is not None
            events = valid.select(self._online_columns(view))
            applies.append(online.prepare_apply(view, events, event_time))
        return files, applies

    def _isolated(
        self, step: str, frame: pl.DataFrame, run: Callable[[pl.DataFrame], T], batch: _Batch
    ) -> tuple[T, pl.DataFrame, list[Rejection]]:
        """``run(frame)``: a step that computes from the rows and writes nothing. When it
        raises (a value it cannot take, a bug of ours), each row is run alone; those that
        raise are dead-lettered (PROCESSING_ERROR, the exception's type: its text may
        quote a value) and the step runs on the others. Returns its result, the rows it
        ran on and the dead letters. When no row raises alone, the batch's error is
        raised."""
        try:
            return run(frame), frame, []
        except Interrupted:
            raise
        except Exception as exc:
            log.error("%s failed for a batch of %d; isolating records%s", step, frame.height,
                      _without_values(exc))  # fmt: skip
            failure = exc
        rows, bad, letters = frame.get_column("_row").to_list(), [], []
        for i, row in enumerate(rows):
            try:
                run(frame.slice(i, 1))
            except Interrupted:
                raise
            except Exception as exc:
                where = f"{batch.topics[row]}[{batch.partitions[row]}]@{batch.offsets[row]}"
                log.error("record %s could not be processed at %s%s", where, step,
                          _without_values(exc))  # fmt: skip
                message = (
                    f"could not be processed at {step} ({type(exc).__name__}); see consumer logs"
                )
                letters.append(Rejection(row, Reason.PROCESSING_ERROR, message))
                bad.append(i)
        if not bad:  # not one record's fault
            raise failure
        kept = frame.filter(~pl.int_range(pl.len()).is_in(bad))
        return run(kept), kept, letters

    def _observe(self, consumed: int, rejections: list[Rejection], valid: pl.DataFrame) -> None:
        """Freshness at write, then contract health and drift (checked when due)."""
        now_ms = int(self.clock() * 1000)
        event_time = self.contract.event_time
        if event_time and valid.height:
            sample = valid.get_column(event_time).sample(min(100, valid.height), seed=0)
            for ms in sample.dt.epoch("ms").drop_nulls():
                EVENT_FRESHNESS_SECONDS.labels(self.definition.name).observe((now_ms - ms) / 1000)
        if self.watch is None:
            return
        watch = self.watch
        self._retrying("observe monitoring",
                       lambda: watch.observe(consumed, rejections, valid, now_ms))  # fmt: skip
        if watch.due(now_ms):
            lag = self._retrying("read the consumer lag", self._lag)
            self._retrying("check monitoring", lambda: watch.check(now_ms, lag))

    def _final_check(self) -> None:
        """A last monitoring check on the way out, so a short run is judged too."""
        assert self.watch is not None
        watch, now_ms = self.watch, int(self.clock() * 1000)
        try:
            # The alerts of the last check are the process's last word: wait for their
            # delivery longer than a batch's check does (a broker still loading its
            # producer-id coordinator answers "retry" for several seconds).
            watch.check(now_ms, self._lag(), flush_timeout=FINAL_FLUSH_S)
        except Exception:  # shutting down: report, do not mask why we stop
            log.exception("the final monitoring check failed")

    def _lag_text(self) -> str:
        """The records behind the partitions' ends, for the progress log line."""
        assert self.consumer is not None
        try:
            return f"{sum(self._lag().values()):,}" if self.consumer.assignment() else "-"
        except KafkaException as exc:  # the broker is away: the loop's retries say so
            return f"unknown ({exc.args[0] if exc.args else exc})"

    def _lag(self) -> dict[str, int]:
        assert self.consumer is not None
        out = {}
        for tp in self.consumer.position(self.consumer.assignment()):
            # The high watermark the fetches already brought back: no request per partition
            # (asking the broker stalled a 4-partition consumer ~2 s per check).
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:  # nothing fetched yet for this partition
                _, high = self.consumer.get_watermark_offsets(tp, timeout=5)
            unread = max(0, high - tp.offset) if tp.offset >= 0 else high
            out[f"{tp.topic}[{tp.partition}]"] = unread
            CONSUMER_LAG.labels(self.definition.name, tp.topic, str(tp.partition)).set(unread)
        return out

    def _online_columns(self, view: FeatureView) -> list[str]:
        """The columns of the valid rows that ``view``'s apply reads."""
        values = [v.column for v in view.values.values()]
        keys = self.definition.join_keys[view.entity]
        event_time = self.contract.event_time or ""
        return list(dict.fromkeys([*keys, event_time, *values, "_topic", "_partition", "_offset"]))

    def _apply_online(self, prepared: PreparedApply) -> None:
        online, view = self.online, prepared.record.view
        assert online is not None
        started = time.monotonic()
        stats = self._retrying(f"apply {view.name} to Redis", lambda: online.send_apply(prepared))
        elapsed = time.monotonic() - started
        ONLINE_WRITE_SECONDS.labels(self.definition.name, view.name).observe(elapsed)
        if stats.resent_entities:
            log.info("%s: %d entities replayed across a batch boundary, resent per event",
                     view.name, stats.resent_entities)  # fmt: skip

    def _online_full(self, *, full: bool) -> None:
        """Fire (full) or resolve (not) the alert of a Redis too full for the views'
        writes, to each view's owner (once per firing: `Alerts`)."""
        watch, online = getattr(self, "watch", None), getattr(self, "online", None)
        if watch is None or online is None:  # (at start, before both are made)
            return
        used = None
        if full:
            try:  # its memory, for the alert; reads still work on a full Redis
                used = max(memory(online.client), key=lambda m: m.used)
            except RedisError as exc:
                log.warning("could not read Redis' memory: %s", exc)
                used = Memory("redis", "", 0, 0)
        for view in self.views:
            watch.online_full(view, used)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Nothing to flush: each batch was committed before the poll that revokes.
        self.watermarks.forget(partitions)
        if self.computed is not None:
            self.computed.forget([(tp.topic, tp.partition) for tp in partitions])
        _log_revoke(consumer, partitions)

    def _validate(
        self, values: list[bytes | None], headers: list[Headers]
    ) -> tuple[pl.DataFrame, list[Rejection]]:
        decoded = self.decoder.decode(values, headers)
        now = datetime.fromtimestamp(self.clock(), tz=UTC)
        valid, broken = split(decoded.frame, self.checks, now, self.retention_ms)
        return valid, sorted([*decoded.rejections, *broken], key=lambda r: r.row)

    def _validate_one_by_one(self, batch: _Batch) -> tuple[pl.DataFrame, list[Rejection]]:
        frames: list[pl.DataFrame] = []
        rejections: list[Rejection] = []
        for row, (value, headers) in enumerate(zip(batch.values, batch.headers, strict=True)):
            try:
                valid, broken = self._retrying(
                    "decode", partial(self._validate, [value], [headers])
                )
            except Interrupted:
                raise
            except Exception as exc:
                # The type only: an exception's text may quote a PII value.
                message = f"could not be processed ({type(exc).__name__}); see consumer logs"
                where = f"{batch.topics[row]}[{batch.partitions[row]}]@{batch.offsets[row]}"
                log.error("record %s could not be processed%s", where, _without_values(exc))
                rejections.append(Rejection(row, Reason.DECODE_ERROR, message))
                continue
            frames.append(valid.with_columns(pl.lit(row, pl.Int64).alias("_row")))
            rejections.extend(replace(r, row=row) for r in broken)
        schema = self.decoder.frame_schema
        return pl.concat(frames) if frames else pl.DataFrame(schema=schema), rejections

    def _dead_letter(self, record: Message, rejection: Rejection) -> DeadLetter:
        source = SourceRecord(
            record.topic(), record.partition(), record.offset(), record.key(), record.value(),
            list(record.headers() or []),
        )  # fmt: skip
        return dead_letter(
            source,
            rejection,
            dlq_topic=self.definition.dlq_for(source.topic),
            subject=self.definition.subject,
            contract_version=self.contract_version,
            group=self.definition.group_id,
            schema_id=_schema_id(record.value()),
        )

    def _count(self, consumed: int, valid: int, rejections: list[Rejection]) -> None:
        name, subject = self.definition.name, self.definition.subject
        self.stats.events_in += consumed
        self.stats.valid += valid
        self.stats.batches += 1
        EVENTS_IN.labels(name, subject).inc(consumed)
        EVENTS_VALID.labels(name, subject).inc(valid)
        for reason, n in Counter(r.reason.value for r in rejections).items():
            self.stats.dead_lettered[reason] += n
            EVENTS_DEAD_LETTERED.labels(name, subject, reason).inc(n)
        if consumed != valid + len(rejections):
            raise AssertionError(f"{consumed} in != {valid} valid + {len(rejections)} dead")

    # --- failures -----------------------------------------------------------------------

    def _retrying(self, what: str, action: Callable[[], T]) -> T:
        delay = 0.5
        while True:
            try:
                return action()
            except RETRYABLE as exc:
                if self._stop.is_set() and what != "commit":
                    raise Interrupted(what) from exc
                if isinstance(exc, OutOfMemoryError):  # Redis full: any write of ours
                    self._online_full(full=True)
                if isinstance(exc, OSError) and exc.errno == errno.ENOSPC and self.watch:
                    self.watch.offline_full(f"{what}: {exc.strerror}")
                wait = jittered(delay)
                log.warning("%s failed, retrying in %.1fs: %s", what, wait, exc)
                RETRIES.labels(self.definition.name, what).inc()
                waited = self.probes.waiting_for
                self.probes.waiting(what)  # not ready, but alive: waiting is its work
                self._stop.wait(wait)
                self.probes.waiting(waited)
                delay = min(delay * 2, 30.0)

    def _rewind(self) -> None:
        assert self.consumer is not None
        assignment = self.consumer.assignment()
        # The uncommitted batch advanced the watermarks: read them back with the offsets.
        self.watermarks.forget(assignment)
        for tp in self.consumer.committed(assignment, timeout=30):
            offset = tp.offset if tp.offset >= 0 else -2  # OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))


def jittered(delay: float) -> float:
    """A retry's wait: ``delay`` give or take half, so that consumers that failed
    together (an outage of Redis, the broker or the registry) do not retry in lockstep."""
    return delay * random.uniform(0.5, 1.5)


def _without_values(exc: BaseException) -> str:
    """Where an unexpected failure happened, for the log, without its message: a message
    may quote a value of the record, and a field may be PII."""
    where = "".join(traceback.format_tb(exc.__traceback__))
    return f": {type(exc).__name__} (message not logged: it may quote a value)\n{where}"


def _restore(handlers: dict[int, Any]) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def _skippable(message: Message) -> bool:
    error = message.error()
    if error is None:
        return False
    log.warning("consume error: %s", error)
    return True


@dataclass(frozen=True)
class _Batch:
    """A batch's records as columns, read from the messages in one pass."""

    values: list[bytes | None]
    headers: list[Headers]
    topics: list[str]
    partitions: list[int]
    offsets: list[int]
    next_offsets: list[TopicPartition]  # what to commit: last offset + 1 per partition
    first_offsets: dict[tuple[str, int], int]  # the batch's first offset per partition

    @classmethod
    def of(cls, records: list[Message]) -> _Batch:
        values, headers, topics, partitions, offsets = [], [], [], [], []
        last: dict[tuple[str, int], int] = {}
        first: dict[tuple[str, int], int] = {}
        for m in records:
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            first.setdefault((topic, partition), offset)
            values.append(m.value())
            headers.append(m.headers() or [])
            topics.append(topic)
            partitions.append(partition)
            offsets.append(offset)
            last[(topic, partition)] = offset  # a partition's offsets ascend in a batch
        ends = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        return cls(values, headers, topics, partitions, offsets, ends, first)


def _schema_id(value: bytes | None) -> int | None:
    if value and len(value) >= 5 and value[0] == 0:
        return int(struct.unpack(">I", value[1:5])[0])
    return None


def _log_assign(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
    log.info("assigned %s", [f"{p.topic}[{p.partition}]" for p in partitions])


def _log_revoke(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
    # Nothing to flush: each batch was committed before the poll that revokes.
    log.info("revoked %s", [f"{p.topic}[{p.partition}]" for p in partitions])

"""Reading and replaying a dead-letter topic: ``featurestore dlq show|replay``.

Replay re-publishes each dead letter's original key, value and headers to its source
topic, with ``fs.replay.count`` raised by one, in Kafka transactions that also commit the
replay group's offsets: a replay never publishes a record twice, and the next replay
starts where the last one stopped. A record already replayed ``max_replays`` times is
not re-published (it keeps failing its contract); it is counted as exhausted.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from featurestore.errors import NotFoundError
from featurestore.stream.checkpoint import Checkpointer
from featurestore.stream.dlq import DeadLetter, header, replay_count, replayable


@dataclass(frozen=True)
class DeadLetterView:
    """What `dlq show` prints: where the event came from and why it was rejected."""

    dlq_offset: int
    dlq_partition: int
    source: str
    reason: str
    field: str | None
    message: str
    replays: int


def _text(headers: list[tuple[str, bytes]] | None, name: str) -> str | None:
    raw = header(headers, name)
    return raw.decode(errors="replace") if raw is not None else None


def view(message: Message) -> DeadLetterView:
    headers = message.headers() or []
    source = "{}[{}]@{}".format(
        _text(headers, "__connect.errors.topic"),
        _text(headers, "__connect.errors.partition"),
        _text(headers, "__connect.errors.offset"),
    )
    return DeadLetterView(
        dlq_offset=message.offset(),
        dlq_partition=message.partition(),
        source=source,
        reason=_text(headers, "fs.error.reason") or "UNKNOWN",
        field=_text(headers, "fs.error.field"),
        message=_text(headers, "__connect.errors.exception.message") or "",
        replays=replay_count(headers),
    )


def _reader(kafka: dict[str, Any], group: str) -> Consumer:
    """A consumer that reads committed records only and never commits by itself."""
    return Consumer(
        {**kafka, "group.id": group, "enable.auto.commit": False,
         "isolation.level": "read_committed"}
    )  # fmt: skip


def _read_to_end(consumer: Consumer, topic: str, timeout: float) -> Iterator[Message]:
    """Every record of ``topic`` from the group's committed offsets (or the start) to the
    current end. Partitions are assigned directly: no group rebalance to wait for."""
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise NotFoundError(
            f"topic '{topic}' does not exist; dead-letter topics are named <source topic>.dlq "
            "unless the definition's dlq_topic says otherwise"
        )
    partitions = [TopicPartition(topic, p) for p in metadata.partitions]
    committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout)}
    ends, starts = {}, {}
    for tp in partitions:
        low, high = consumer.get_watermark_offsets(tp, timeout)
        ends[tp.partition] = high
        starts[tp.partition] = max(committed.get(tp.partition, -1), low)
    assigned = [TopicPartition(topic, p, starts[p]) for p in ends]
    consumer.assign(assigned)
    positions = dict(starts)
    while any(positions[p] < ends[p] for p in ends):
        first = consumer.poll(timeout)  # returns on the first record, unlike consume()
        msgs = [] if first is None else [first, *consumer.consume(500, 0)]
        for m in msgs:
            if not m.error() and m.offset() < ends[m.partition()]:
                yield m
        # The position, not the last record: it also steps over transaction markers.
        before = dict(positions)
        for tp in consumer.position(assigned):
            positions[tp.partition] = max(positions[tp.partition], tp.offset)
        if not msgs and positions == before:
            break


def show(
    kafka: dict[str, Any], topic: str, reason: str | None = None, limit: int | None = None,
    timeout: float = 10.0,
) -> tuple[list[DeadLetterView], Counter[str]]:  # fmt: skip
    """Dead letters (optionally of one reason, at most ``limit``) and counts by reason."""
    consumer = _reader(kafka, f"fs-dlq-show-{uuid.uuid4().hex}")
    shown: list[DeadLetterView] = []
    counts: Counter[str] = Counter()
    try:
        for message in _read_to_end(consumer, topic, timeout):
            letter = view(message)
            counts[letter.reason] += 1
            if (reason is None or letter.reason == reason) and (
                limit is None or len(shown) < limit
            ):
                shown.append(letter)
    finally:
        consumer.close()
    return shown, counts


@dataclass
class ReplayReport:
    replayed: Counter[str] = field(default_factory=Counter)  # by source topic
    exhausted: int = 0
    skipped_other_reasons: int = 0


def replay(
    kafka: dict[str, Any], topic: str, reason: str | None = None, max_replays: int = 3,
    timeout: float = 10.0,
) -> ReplayReport:  # fmt: skip
    """Re-publish dead letters of ``topic`` to their source topics (see module doc)."""
    group = f"fs-dlq-replay-{topic}-{reason or 'all'}"
    consumer = _reader(kafka, group)
    checkpointer = Checkpointer(kafka, group)
    report = ReplayReport()
    batch: list[DeadLetter] = []
    last: dict[int, int] = {}
    try:
        for message in _read_to_end(consumer, topic, timeout):
            last[message.partition()] = message.offset()
            headers = message.headers() or []
            if reason is not None and _text(headers, "fs.error.reason") != reason:
                report.skipped_other_reasons += 1
            elif replay_count(headers) >= max_replays:
                report.exhausted += 1
            else:
                source, new_headers = replayable(headers)
                batch.append(DeadLetter(source, message.key(), message.value(), new_headers))
                report.replayed[source] += 1
            if len(batch) >= 1000:
                _flush(checkpointer, consumer, topic, batch, last)
        _flush(checkpointer, consumer, topic, batch, last)
    finally:
        consumer.close()
        checkpointer.close()
    return report


def _flush(
    checkpointer: Checkpointer, consumer: Consumer, topic: str, batch: list[DeadLetter],
    last: dict[int, int],
) -> None:  # fmt: skip
    if not last:
        return
    offsets = [TopicPartition(topic, p, o + 1) for p, o in last.items()]
    checkpointer.commit(consumer, batch, offsets)
    batch.clear()

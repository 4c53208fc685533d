"""Dead-letter records: the original key, value and headers, untouched, plus error
headers that existing DLQ tooling reads.

Header conventions (all values UTF-8):
- Kafka Connect's ``__connect.errors.{topic,partition,offset,exception.class.name,
  exception.message}``;
- Confluent data contracts' ``__rule.name`` and ``__rule.subject`` for rule failures;
- ours: ``fs.error.reason``, ``fs.error.field``, ``fs.schema.id``,
  ``fs.contract.version``, ``fs.consumer.group``, and ``fs.replay.count`` (how many times
  the event was replayed from a DLQ already; replay stops at a limit so a record that
  still breaks its contract is not dead-lettered forever).
Messages come from ``Rejection`` and never quote a PII value.
"""

from __future__ import annotations

from dataclasses import dataclass

from featurestore.contracts.violations import Reason, Rejection

Headers = list[tuple[str, bytes]]

REPLAY_COUNT = "fs.replay.count"
ERROR_PREFIXES = ("__connect.errors.", "__rule.", "fs.error.", "fs.schema.", "fs.contract.",
                  "fs.consumer.")  # fmt: skip


@dataclass(frozen=True)
class SourceRecord:
    """Where a bad event came from, as consumed."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers


def header(headers: Headers | None, name: str) -> bytes | None:
    """The last value of header ``name`` (Kafka headers may repeat)."""
    found = None
    for key, value in headers or ():
        if key == name:
            found = value
    return found


def replay_count(headers: Headers | None) -> int:
    raw = header(headers, REPLAY_COUNT)
    try:
        return int(raw or b"0")
    except ValueError:
        return 0


def dead_letter(
    source: SourceRecord,
    rejection: Rejection,
    *,
    dlq_topic: str,
    subject: str,
    contract_version: int,
    group: str,
    schema_id: int | str | None = None,
) -> DeadLetter:
    """The DLQ record for one rejected event."""
    errors: dict[str, str] = {
        "__connect.errors.topic": source.topic,
        "__connect.errors.partition": str(source.partition),
        "__connect.errors.offset": str(source.offset),
        "__connect.errors.exception.class.name": f"featurestore.{rejection.reason.value}",
        "__connect.errors.exception.message": rejection.message,
        "fs.error.reason": rejection.reason.value,
        "fs.contract.version": str(contract_version),
        "fs.consumer.group": group,
    }
    if rejection.rule is not None or rejection.reason is not Reason.DECODE_ERROR:
        errors["__rule.name"] = rejection.rule or rejection.reason.value
        errors["__rule.subject"] = subject
    if rejection.field is not None:
        errors["fs.error.field"] = rejection.field
    if schema_id is not None:
        errors["fs.schema.id"] = str(schema_id)
    # Original headers first, untouched; ours after, replacing any stale ones from an
    # earlier dead-lettering of a replayed record.
    kept = [(k, v) for k, v in source.headers if not k.startswith(ERROR_PREFIXES)]
    ours = [(k, v.encode()) for k, v in errors.items()]
    return DeadLetter(dlq_topic, source.key, source.value, kept + ours)


def replayable(headers: Headers | None) -> tuple[str, Headers]:
    """The source topic and the headers to re-publish a DLQ record with: the original
    ones, error headers removed, replay count increased."""
    source = header(headers, "__connect.errors.topic")
    if source is None:
        raise ValueError("not a featurestore dead letter: no __connect.errors.topic header")
    count = replay_count(headers) + 1
    kept = [
        (k, v) for k, v in headers or () if not k.startswith(ERROR_PREFIXES) and k != REPLAY_COUNT
    ]
    return source.decode(), [*kept, (REPLAY_COUNT, str(count).encode())]

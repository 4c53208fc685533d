"""Dead-letter records: original bytes and headers untouched, error headers as Kafka
Connect and Confluent tooling expect, replay counting."""

from __future__ import annotations

import pytest

from featurestore.contracts.violations import Reason, Rejection
from featurestore.stream.dlq import (
    REPLAY_COUNT,
    SourceRecord,
    dead_letter,
    header,
    replay_count,
    replayable,
)

SOURCE = SourceRecord(
    topic="payments",
    partition=3,
    offset=1234,
    key=b"card_000001",
    value=b"\x00\x00\x00\x00\x01raw-avro",
    headers=[("traceparent", b"00-abc-def-01"), ("src", b"pos")],
)


TARGET = {
    "dlq_topic": "payments.dlq",
    "subject": "payments-value",
    "contract_version": 1,
    "group": "g",
    "schema_id": 1,
}


def _headers(letter_headers: list[tuple[str, bytes]]) -> dict[str, str]:
    return {k: v.decode() for k, v in letter_headers}


def test_a_dead_letter_keeps_the_original_and_says_why() -> None:
    rejection = Rejection(
        row=0,
        reason=Reason.CONSTRAINT_VIOLATION,
        message="field 'amount': -1.0 is below min 0",
        field="amount",
        rule="min",
    )
    letter = dead_letter(
        SOURCE,
        rejection,
        dlq_topic="payments.dlq",
        subject="payments-value",
        contract_version=2,
        group="fs-payments",
        schema_id=1,
    )
    assert letter.topic == "payments.dlq"
    assert (letter.key, letter.value) == (SOURCE.key, SOURCE.value)
    assert letter.headers[:2] == SOURCE.headers  # original headers first, untouched
    h = _headers(letter.headers)
    assert h["__connect.errors.topic"] == "payments"
    assert h["__connect.errors.partition"] == "3"
    assert h["__connect.errors.offset"] == "1234"
    assert h["__connect.errors.exception.class.name"] == "featurestore.CONSTRAINT_VIOLATION"
    assert h["__connect.errors.exception.message"] == "field 'amount': -1.0 is below min 0"
    assert h["__rule.name"] == "min"
    assert h["__rule.subject"] == "payments-value"
    assert h["fs.error.reason"] == "CONSTRAINT_VIOLATION"
    assert h["fs.error.field"] == "amount"
    assert h["fs.schema.id"] == "1"
    assert h["fs.contract.version"] == "2"
    assert h["fs.consumer.group"] == "fs-payments"


def test_a_decode_error_names_no_rule_or_field() -> None:
    rejection = Rejection(0, Reason.DECODE_ERROR, "not Confluent framing (magic byte 7)")
    h = _headers(
        dead_letter(
            SOURCE, rejection, dlq_topic="d", subject="s", contract_version=1, group="g"
        ).headers
    )
    assert "__rule.name" not in h
    assert "fs.error.field" not in h
    assert "fs.schema.id" not in h
    assert h["fs.error.reason"] == "DECODE_ERROR"


def test_replay_strips_error_headers_and_counts() -> None:
    rejection = Rejection(0, Reason.LATE_EVENT, "late", field="ts", rule="late")
    letter = dead_letter(SOURCE, rejection, **TARGET)
    topic, headers = replayable(letter.headers)
    assert topic == "payments"
    assert headers == [*SOURCE.headers, (REPLAY_COUNT, b"1")]

    # Dead-lettered again after the replay: the count travels, stale errors do not.
    again = SourceRecord("payments", 0, 9, SOURCE.key, SOURCE.value, headers)
    second = dead_letter(again, rejection, **TARGET)
    assert replay_count(second.headers) == 1
    assert [k for k, _ in second.headers].count("fs.error.reason") == 1
    assert replayable(second.headers)[1][-1] == (REPLAY_COUNT, b"2")


def test_header_lookup_takes_the_last_value_and_tolerates_junk() -> None:
    headers = [("a", b"1"), ("a", b"2")]
    assert header(headers, "a") == b"2"
    assert header(None, "a") is None
    assert replay_count([(REPLAY_COUNT, b"not a number")]) == 0
    with pytest.raises(ValueError, match="not a featurestore dead letter"):
        replayable([("a", b"1")])

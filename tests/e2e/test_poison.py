"""A record that breaks the code itself (not its contract) is isolated and
dead-lettered: the batch is retried one record at a time, the others go on, and the
consumer neither stops nor loops. Neither the dead letter nor the log quotes the
exception's message, which may hold a value."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from featurestore.offline import scan_events
from featurestore.stream.dlq_tools import show
from tests.conftest import Services
from tests.e2e.test_ingest_outages import consumer, send_v1
from tests.integration.registry.conftest import RunningRegistry

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
SECRET = "poison-canary-4711"


def test_a_record_that_breaks_the_code_is_dead_lettered_alone(
    services: Services, registry: RunningRegistry, new_topic, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    topic = new_topic(partitions=1)
    send_v1(services, registry, topic, 50)
    kafka = {"bootstrap.servers": services.kafka_bootstrap}
    runtime = consumer(services, registry, topic, tmp_path, "poison")
    decode = runtime.decoder.decode

    def breaks_on_poison(batch: list[bytes | None], headers: list) -> object:
        if any(value and b"p-17" in value for value in batch):  # a bug we have for p-17
            raise ValueError(f"cannot handle {SECRET}")
        return decode(batch, headers)

    runtime.decoder.decode = breaks_on_poison  # type: ignore[method-assign]
    with caplog.at_level(logging.DEBUG):
        runtime.run(until=lambda s: s.events_in >= 50)

    assert runtime.stats.events_in == 50
    assert dict(runtime.stats.dead_lettered) == {"DECODE_ERROR": 1}
    ids = scan_events(str(tmp_path), "payments-value").collect()["payment_id"]
    assert sorted(ids) == sorted(f"p-{i}" for i in range(50) if i != 17)
    letters, _ = show(kafka, f"{topic}.dlq", limit=None)
    assert [(letter.source, letter.message) for letter in letters] == [
        (f"{topic}[0]@17", "could not be processed (ValueError); see consumer logs")
    ]
    logged = caplog.text
    assert "isolating records" in logged
    assert f"record {topic}[0]@17 could not be processed: ValueError" in logged
    assert "breaks_on_poison" in logged  # where it broke is logged
    assert SECRET not in logged

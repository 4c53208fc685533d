"""A record that breaks the code itself (not its contract) is isolated and
dead-lettered: the batch is retried one record at a time, the others go on, and the
consumer neither stops nor loops. That holds at decoding and at every step after
validation (the watermark split, the offline file's encoding, a view's online
preparation): the record ends in one place, its dead letter, never also in a sink.
Neither the dead letter nor the log quotes the exception's message, which may hold a
value."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from featurestore.contracts.registry.client import RegistryClient
from featurestore.offline import scan_events
from featurestore.online import RedisOnlineStore, connect
from featurestore.stream import ConsumerRuntime
from featurestore.stream.dlq_tools import show
from tests.conftest import Services
from tests.e2e.test_features import definition
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
    _run_with_one_poison(runtime, caplog, tmp_path, "DECODE_ERROR")
    letters, _ = show(kafka, f"{topic}.dlq", limit=None)
    assert [(letter.source, letter.message) for letter in letters] == [
        (f"{topic}[0]@17", "could not be processed (ValueError); see consumer logs")
    ]
    logged = caplog.text
    assert "isolating records" in logged
    assert f"record {topic}[0]@17 could not be processed: ValueError" in logged
    assert "breaks_on_poison" in logged  # where it broke is logged
    assert SECRET not in logged


def _run_with_one_poison(
    runtime: ConsumerRuntime, caplog: pytest.LogCaptureFixture, offline: Path, reason: str
) -> None:
    """Run ``runtime`` over the 50 events: payment p-17 alone is dead-lettered, for
    ``reason``, and the others reach Parquet."""
    with caplog.at_level(logging.DEBUG):
        runtime.run(until=lambda s: s.events_in >= 50)
    assert runtime.stats.events_in == 50
    assert dict(runtime.stats.dead_lettered) == {reason: 1}
    ids = scan_events(str(offline), "payments-value").collect()["payment_id"]
    assert sorted(ids) == sorted(f"p-{i}" for i in range(50) if i != 17)


def _breaks_on_poison(original: Any, column: str = "payment_id", value: Any = "p-17") -> Any:
    """``original`` raising, as a bug of ours would, on a frame holding payment p-17
    (its ``column`` holds ``value``: a view's apply sees only the view's columns)."""

    def broken(frame: pl.DataFrame, *args: Any, **kwargs: Any) -> Any:
        if value in frame.get_column(column).to_list():
            raise ValueError(f"cannot handle {SECRET}")
        return original(frame, *args, **kwargs)

    return broken


@pytest.mark.parametrize("step", ["split by watermark", "offline encoding", "online preparation"])
def test_a_record_that_breaks_a_step_after_validation_is_dead_lettered_alone(
    *, step: str, services: Services, registry: RunningRegistry, new_topic: Any,
    tmp_path: Path, redis_prefix: str, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    topic = new_topic(partitions=1)
    send_v1(services, registry, topic, 50)
    d = definition(topic, f"poison-{topic}", redis_prefix.rstrip(":"))
    store = RedisOnlineStore(connect(services.redis_url), d.join_keys, d.sinks.online.prefix)
    kafka = {"bootstrap.servers": services.kafka_bootstrap}
    runtime = ConsumerRuntime(d, kafka, RegistryClient(registry.url), str(tmp_path),
                              online=store)  # fmt: skip
    if step == "split by watermark":
        split = _breaks_on_poison(runtime.watermarks.split)
        runtime.watermarks.split = split  # type: ignore[method-assign]
    elif step == "offline encoding":
        assert runtime.sink is not None
        runtime.sink.encode = _breaks_on_poison(runtime.sink.encode)  # type: ignore[method-assign]
    else:
        prepare = store.prepare_apply

        def breaks(view: Any, events: pl.DataFrame, time_col: str) -> Any:
            apply = _breaks_on_poison(lambda f: prepare(view, f, time_col), "amount", 18.0)
            return apply(events)  # p-17's amount is 18.0, no other payment's

        store.prepare_apply = breaks  # type: ignore[method-assign]
    _run_with_one_poison(runtime, caplog, tmp_path, "PROCESSING_ERROR")
    cards = [f"card_{i:06d}" for i in range(50)]  # one card per payment
    view = d.views[0]
    online = store.read(view, pl.DataFrame({"card_id": cards}), int(time.time() * 1000),
                        ["amount_count_1h"])  # fmt: skip
    assert online["amount_count_1h"].to_list() == [0 if i == 17 else 1 for i in range(50)]
    letters, _ = show(kafka, d.dlq_for(topic), limit=None)
    where = "split by watermark" if step == "split by watermark" else "prepare the writes"
    assert [(letter.source, letter.reason, letter.message) for letter in letters] == [
        (f"{topic}[0]@17", "PROCESSING_ERROR",
         f"could not be processed at {where} (ValueError); see consumer logs")
    ]  # fmt: skip
    logged = caplog.text
    assert f"record {topic}[0]@17 could not be processed at {where}: ValueError" in logged
    assert SECRET not in logged

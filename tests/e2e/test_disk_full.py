"""The offline store's disk fills up under a running consumer (a tmpfs of the test's
own): the consumer waits with a log line and an alert to the contract's owner, commits
nothing it did not write, leaves no partial file behind, and resumes when space returns.
Needs to mount a tmpfs (root, as on this project's CI machines); skipped elsewhere."""

from __future__ import annotations

import errno
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from featurestore.offline import scan_events
from tests.conftest import Services
from tests.e2e.test_groups import until
from tests.e2e.test_ingest_outages import V1, _event, consumer
from tests.integration.registry.conftest import RunningRegistry

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def send(services: Services, registry: RunningRegistry, topic: str, ids: range) -> None:
    """Payments ``p-<i>`` for ``i`` in ``ids``, under contract v1."""
    client = registry.client()
    client.register_schema("payments-value", Schema(V1, "AVRO"))
    serialize, ctx = AvroSerializer(client, V1), SerializationContext(topic, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": services.kafka_bootstrap})
    for i in ids:
        producer.produce(topic, value=serialize(_event(i), ctx))
    assert producer.flush(30) == 0


def fill(filler: Path) -> None:
    """``filler``: a file that takes every free byte of its disk."""
    with filler.open("wb") as out, pytest.raises(OSError, match="No space left") as full:
        _write_until_it_fails(out)
    assert full.value.errno == errno.ENOSPC


def _write_until_it_fails(out: BinaryIO) -> None:
    while True:
        out.write(b"\0" * 65536)
        out.flush()


def test_a_full_disk_makes_the_consumer_wait_alert_and_resume(
    services: Services, registry: RunningRegistry, new_topic: Any, small_disk: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    topic = new_topic(partitions=1)
    send(services, registry, topic, range(100))
    offline = small_disk / "offline"
    runtime = consumer(services, registry, topic, offline, "disk")
    worker = threading.Thread(target=runtime.run, kwargs={"until": lambda s: s.events_in >= 200})
    filler = small_disk / "filler"
    try:
        with caplog.at_level(logging.WARNING):
            worker.start()
            until(lambda: runtime.stats.events_in >= 100, lambda: runtime.stats)

            fill(filler)
            send(services, registry, topic, range(100, 200))
            time.sleep(4)
            assert runtime.stats.events_in == 100  # waiting: commits nothing it did not write
            assert worker.is_alive()
            assert runtime.watch is not None
            firing = [a for a in runtime.watch.alerts.firing.values()
                      if a.kind == "offline_store_full"]  # fmt: skip
            assert [(a.subject, a.owner) for a in firing] == [
                ("payments-value", "payments-team@example.com")
            ]
            partial = [p for p in offline.rglob("*") if p.name.startswith(".")]
            assert partial == []  # each failed write removed its temporary file

            filler.unlink()  # space returns
            worker.join(timeout=90)
    finally:  # a failed check must not leave the consumer running (and the test hanging)
        filler.unlink(missing_ok=True)
        runtime.stop()
        worker.join(timeout=60)
    assert not worker.is_alive()
    assert runtime.stats.events_in == 200
    assert runtime.stats.dead_total == 0
    assert not [a for a in runtime.watch.alerts.firing.values() if a.kind == "offline_store_full"]
    assert "write offline events failed, retrying" in caplog.text
    assert "No space left on device" in caplog.text
    ids = scan_events(str(offline), "payments-value").collect()["payment_id"]
    assert sorted(ids) == sorted(f"p-{i}" for i in range(200))

"""What a consumer run leaves behind, and the check the fault tests share: a run that
met faults ends exactly where a run that met none does."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from featurestore.contracts.registry.client import RegistryClient
from featurestore.offline.events import scan_events
from featurestore.online import RedisOnlineStore, connect
from featurestore.stream import ConsumerDefinition, ConsumerRuntime
from featurestore.stream.dlq_tools import show
from tests.e2e.test_features import MINUTE, definition, values_at
from tests.frames import assert_close


@dataclass(frozen=True)
class Outcome:
    """Where one run put its results: online keys, offline files, dead-letter topic."""

    store: RedisOnlineStore
    offline: Path
    dlq: str


def reference_run(
    kafka: dict[str, Any], redis_url: str, registry_url: str, topic: str, *, name: str,
    prefix: str, home: Path, events: int, batch_size: int = 5000,
) -> tuple[ConsumerDefinition, Outcome, int]:  # fmt: skip
    """The stream read once, in-process, by a consumer that meets no fault (group
    ``fs-<name>-<topic>``, keys under ``prefix``, events to ``home/offline-<name>``, dead
    letters to ``<topic>.dlq.<name>``), until it has taken ``events`` records (or 180 s
    passed); returns how many it took too."""
    d = definition(topic, f"fs-{name}-{topic}", prefix, batch_size=batch_size)
    d = d.model_copy(update={"dlq_topic": f"{topic}.dlq.{name}"})
    store = RedisOnlineStore(connect(redis_url), d.join_keys, prefix)
    offline = home / f"offline-{name}"
    runtime = ConsumerRuntime(d, kafka, RegistryClient(registry_url), str(offline),
                              online=store)  # fmt: skip
    deadline = time.monotonic() + 180
    runtime.run(until=lambda s: s.events_in >= events or time.monotonic() > deadline)
    return d, Outcome(store, offline, d.dlq_for(topic)), runtime.stats.events_in


def started_consumer(
    kafka: dict[str, Any], redis_url: str, registry_url: str, topic: str, *, group: str,
    prefix: str, offline: Path,
) -> tuple[ConsumerDefinition, RedisOnlineStore, ConsumerRuntime, threading.Thread]:  # fmt: skip
    """A consumer of ``topic`` with the test views (batches of 300, dead letters to
    ``<topic>.dlq``, keys under ``prefix``, Redis calls that give up after 2 s), running
    in a daemon thread."""
    d = definition(topic, group, prefix, batch_size=300)
    d = d.model_copy(update={"dlq_topic": f"{topic}.dlq"})
    store = RedisOnlineStore(connect(redis_url, socket_timeout=2), d.join_keys, prefix)
    runtime = ConsumerRuntime(d, kafka, RegistryClient(registry_url), str(offline),
                              online=store)  # fmt: skip
    thread = threading.Thread(target=runtime.run, daemon=True)
    thread.start()
    return d, store, runtime, thread


def offline_events(root: Path) -> pl.DataFrame:
    """The run's offline events after dedupe, in source order."""
    scanned = scan_events(str(root), "payments-value").collect()
    return scanned.drop("event_date").sort("_partition", "_offset")


def dead_letters(kafka: dict[str, Any], topic: str) -> list[tuple[str, str]]:
    """(source, reason) of every committed dead letter, duplicates kept."""
    letters, _ = show(kafka, topic, limit=None)
    return sorted((letter.source, letter.reason) for letter in letters)


def assert_same_outcome(
    kafka: dict[str, Any], d: ConsumerDefinition, events: list[tuple[int, dict[str, Any]]],
    got: Outcome, want: Outcome,
) -> list[tuple[str, str]]:  # fmt: skip
    """Online values (at the newest event and 30 minutes on), offline events and dead
    letters equal; no dead letter twice; every event in exactly one place. Returns the
    dead letters."""
    cards = sorted({e["card_id"] for _, e in events})
    newest = max(e["ts"] for _, e in events)
    for at in (newest, newest + 30 * MINUTE):
        assert_close(values_at(got.store, d, cards, at), values_at(want.store, d, cards, at))
    offline = offline_events(got.offline)
    assert offline.equals(offline_events(want.offline))
    letters = dead_letters(kafka, got.dlq)
    assert letters == dead_letters(kafka, want.dlq)
    assert len(set(letters)) == len(letters), "a dead letter was written twice"
    assert offline.height + len(letters) == len(events)
    return letters

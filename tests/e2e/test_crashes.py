"""Kill -9 anywhere: `featurestore run` SIGKILLs itself at 27 crash points drawn at
random across the steps of a batch (`featurestore/crashpoints.py`: after the poll, the
decode, a Parquet file's temporary write, the offline write, a Redis pipeline, the
online apply, the dead letters in the open transaction, the offsets in it, and the
commit), and is restarted after each. After the last restart drains the stream, its
online values, its offline events (after dedupe) and its dead letters equal those of an
uninterrupted run of the same stream: the dead letters with no duplicate, because they
commit in one Kafka transaction with the offsets.

The stream is adversarial: besides late events it holds undecodable bytes, truncated
Avro, unknown schema ids and values that break the contract, spread over the stream so
most batches have dead letters to commit.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from featurestore.crashpoints import POINTS
from featurestore.online import RedisOnlineStore
from tests.conftest import Services
from tests.e2e.outcomes import Outcome, assert_same_outcome, reference_run
from tests.e2e.test_features import PARTITIONS, _lag, produce, run_command, stream
from tests.integration.registry.conftest import RunningRegistry

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
MINUTE = 60_000
EVENTS = 24_000
BATCH = 300


def adversarial(services: Services, registry: RunningRegistry, topic: str,
                seed: int) -> tuple[list[tuple[int, dict[str, Any]]], Counter[str]]:  # fmt: skip
    """Produce a random stream with about 4% broken records; returns the events and how
    many records of each kind were broken."""
    rng = random.Random(seed)
    events = stream(EVENTS, seed=seed, end_ms=int(time.time() * 1000) - MINUTE, cards=300)
    kinds = rng.choices(["ok", "bytes", "truncated", "unknown_id", "rule"], [96, 1, 1, 1, 1],
                        k=len(events))  # fmt: skip
    for (_, event), kind in zip(events, kinds, strict=True):
        if kind == "rule":
            event["amount"] = -1.0  # below the contract's min 0

    def tamper(i: int, value: bytes) -> bytes:
        if kinds[i] == "bytes":
            return rng.randbytes(rng.randint(0, 40))
        if kinds[i] == "truncated":
            return value[: rng.randint(6, len(value) - 1)]
        if kinds[i] == "unknown_id":
            return b"\x00\x7f\xff\xff\xf0" + value[5:]
        return value

    produce(services, registry, topic, events, tamper)
    return events, Counter(kind for kind in kinds if kind != "ok")


def test_sigkill_at_random_batch_steps_equals_an_uninterrupted_run(
    services: Services, registry: RunningRegistry, new_topic: Any, redis_prefix: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    topic = new_topic(partitions=PARTITIONS)
    events, broken = adversarial(services, registry, topic, seed=47)
    group, prefix = f"fs-crashed-{topic}", redis_prefix + "crashed"
    command, env = run_command(services, registry, tmp_path, topic, name="crashed",
                               prefix=prefix, batch_size=BATCH)  # fmt: skip
    command += ["--instance-id", "crash-test"]

    rng = random.Random(5)
    plan = [(point, rng.randint(1, 3)) for point in rng.sample(POINTS * 3, len(POINTS) * 3)]
    lags = []
    for i, (point, n) in enumerate(plan):
        log = tmp_path / f"run-{i}.log"
        with log.open("w") as out:
            run = subprocess.Popen(command, env={**env, "FEATURESTORE_CRASH_AT": f"{point}:{n}"},
                                   stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
            try:
                code = run.wait(120)
            except subprocess.TimeoutExpired:
                run.kill()
                pytest.fail(f"run {i} never reached {point}:{n}: {log.read_text()[-2000:]}")
        assert code == -signal.SIGKILL, f"run {i} ({point}:{n}): {log.read_text()[-2000:]}"
        lags.append(_lag(services, topic, group))
    assert lags == sorted(lags, reverse=True), lags  # committed work never goes back
    assert 0 < lags[-1] < len(events) - 10 * BATCH, lags  # crashes spread over the stream

    # The last restart drains the stream.
    with (tmp_path / "run-last.log").open("w") as out:
        run = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while _lag(services, topic, group) > 0:
            assert run.poll() is None, (tmp_path / "run-last.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the last run did not drain the stream"
            time.sleep(0.2)
        run.send_signal(signal.SIGTERM)
        assert run.wait(60) == 0

    # The same stream, uninterrupted, in-process, into other keys, files and topic.
    kafka = {"bootstrap.servers": services.kafka_bootstrap}
    d, whole, consumed = reference_run(
        kafka, services.redis_url, registry.url, topic, name="whole",
        prefix=redis_prefix + "whole", home=tmp_path, events=len(events),
    )  # fmt: skip
    assert consumed == len(events)
    crashed = Outcome(RedisOnlineStore(whole.store.client, d.join_keys, prefix),
                      tmp_path / "offline-crashed", f"{topic}.dlq.crashed")  # fmt: skip
    letters = assert_same_outcome(kafka, d, events, crashed, whole)
    reasons = Counter(reason for _, reason in letters)
    undecodable = broken["bytes"] + broken["truncated"] + broken["unknown_id"]
    assert reasons["DECODE_ERROR"] + reasons["UNKNOWN_SCHEMA"] >= undecodable
    assert reasons["CONSTRAINT_VIOLATION"] >= broken["rule"]
    assert reasons["LATE_EVENT"]

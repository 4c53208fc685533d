"""The registry is stateless: its truth is the Kafka topic. A restarted instance serves
the same ids, versions, configs and deletions; two instances on one topic agree, and
concurrent writes through both never hand out one id twice."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from tests.integration.registry.conftest import RunningRegistry

pytestmark = pytest.mark.integration

V1 = json.loads((Path(__file__).parents[3] / "schemas" / "card_payment.v1.avsc").read_text())


def variant(n: int) -> str:
    """A distinct valid contract per n: v1 plus an optional field named for n."""
    schema = copy.deepcopy(V1)
    schema["fields"].append({"name": f"extra_{n}", "type": ["null", "long"], "default": None})
    return json.dumps(schema)


def snapshot(registry: RunningRegistry) -> dict[str, object]:
    """Everything a client can read, through a fresh (cache-free) stock client."""
    client = registry.client()
    subjects = sorted(client.get_subjects())
    view: dict[str, object] = {"subjects": subjects, "global": client.get_compatibility()}
    for subject in subjects:
        view[subject] = [
            (v, client.get_version(subject, v).schema_id) for v in client.get_versions(subject)
        ]
        try:
            view[f"{subject}/config"] = client.get_compatibility(subject)
        except SchemaRegistryError as exc:  # 40408: no subject-level config, as Confluent
            view[f"{subject}/config"] = exc.error_code
    return view


def test_restart_serves_the_same_state(
    start_registry: Callable[..., RunningRegistry],
) -> None:
    first = start_registry()
    client = first.client()
    ids = [client.register_schema("pay-value", Schema(variant(n), "AVRO")) for n in range(3)]
    client.register_schema("other-value", Schema(variant(1), "AVRO"))
    client.set_compatibility("pay-value", "FULL")
    client.set_compatibility(level="FORWARD")
    client.delete_version("pay-value", 2)
    client.register_schema("gone-value", Schema(variant(9), "AVRO"))
    client.delete_subject("gone-value")
    client.delete_subject("gone-value", permanent=True)
    before = snapshot(first)
    first.stop()

    again = start_registry(topic=first.topic)
    assert snapshot(again) == before
    assert before["pay-value"] == [(1, ids[0]), (3, ids[2])]
    assert before["other-value"] == [(1, ids[1])]
    assert before["pay-value/config"] == "FULL"
    assert before["global"] == "FORWARD"
    # Soft-deleted versions are still there for whoever asks.
    assert again.client().get_versions("pay-value", deleted=True) == [1, 2, 3]
    # Ids continue after the highest ever handed out, even a purged one.
    purged_id = max(ids) + 1
    fresh = again.client().register_schema("new-value", Schema(variant(42), "AVRO"))
    assert fresh == purged_id + 1


def test_two_instances_on_one_topic_agree(
    start_registry: Callable[..., RunningRegistry],
) -> None:
    a = start_registry()
    b = start_registry(topic=a.topic)
    id_a = a.client().register_schema("pay-value", Schema(variant(1), "AVRO"))
    # What one instance wrote, the other serves (it tails the same topic).
    deadline = time.monotonic() + 10
    while "pay-value" not in b.client().get_subjects():
        assert time.monotonic() < deadline, "instance b never saw a's write"
        time.sleep(0.05)
    assert b.client().get_schema(id_a).schema_str == a.client().get_schema(id_a).schema_str
    # b writes next: it catches up first, so the version and id follow a's.
    id_b = b.client().register_schema("pay-value", Schema(variant(2), "AVRO"))
    assert id_b == id_a + 1
    assert b.client().get_versions("pay-value") == [1, 2]
    time.sleep(0.5)
    assert snapshot(a) == snapshot(b)


def test_concurrent_writes_through_two_instances_never_share_an_id(
    start_registry: Callable[..., RunningRegistry],
) -> None:
    a = start_registry()
    b = start_registry(topic=a.topic)
    results: dict[int, int] = {}
    errors: list[BaseException] = []

    def register(instance: RunningRegistry, numbers: range) -> None:
        client = instance.client()
        try:
            for n in numbers:
                results[n] = client.register_schema(f"s{n % 3}-value", Schema(variant(n), "AVRO"))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=register, args=(a, range(0, 12))),
        threading.Thread(target=register, args=(b, range(12, 24))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    # 24 distinct schemas, 24 distinct ids, and both instances agree on each.
    assert len(set(results.values())) == 24
    time.sleep(0.5)
    for n, schema_id in results.items():
        text = a.client().get_schema(schema_id).schema_str
        assert text == b.client().get_schema(schema_id).schema_str
        assert f"extra_{n}" in text
    assert snapshot(a) == snapshot(b)
    # Versions per subject are 1..k with no gap or duplicate.
    for subject in ("s0-value", "s1-value", "s2-value"):
        assert a.client().get_versions(subject) == list(range(1, 9))

"""Every compatibility level against every common schema change, through the stock
confluent-kafka client and the raw HTTP API, with the verdicts Avro's resolution rules
give: BACKWARD = the new schema reads data written with the old one; FORWARD = the old
schema reads data written with the new one; FULL = both; NONE = anything goes. The
TRANSITIVE forms check every earlier version instead of the latest only.

Each write is a Kafka transaction (about a quarter of a second), so the module runs one
registry per level and sets up the subjects of all levels in parallel."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from tests.conftest import Services
from tests.integration.registry.conftest import RunningRegistry, delete_topics, fresh_topic

pytestmark = pytest.mark.integration

LEVELS = (
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
)
# The directions each level checks: BACKWARD = new reads old, FORWARD = old reads new.
DIRECTIONS = {
    "BACKWARD": {"BACKWARD"},
    "BACKWARD_TRANSITIVE": {"BACKWARD"},
    "FORWARD": {"FORWARD"},
    "FORWARD_TRANSITIVE": {"FORWARD"},
    "FULL": {"BACKWARD", "FORWARD"},
    "FULL_TRANSITIVE": {"BACKWARD", "FORWARD"},
    "NONE": set(),
}

BASE: dict[str, Any] = {
    "type": "record",
    "name": "Payment",
    "namespace": "com.example.compat",
    "featurestore": {"entity": ["id"], "event_time": "ts"},
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "amount", "type": "int"},
        {"name": "big", "type": "long"},
        {
            "name": "channel",
            "type": {"type": "enum", "name": "Channel", "symbols": ["POS", "ONLINE", "ATM"]},
        },
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "memo", "type": ["null", "string", "int"], "default": None},
        {"name": "legacy", "type": "string", "default": ""},
        {"name": "code", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(f for f in schema["fields"] if f["name"] == name)
    return found


@dataclass(frozen=True)
class Change:
    name: str
    apply: Callable[[dict[str, Any]], None]
    field: str  # the field a refusal must name
    breaks: frozenset[str]  # the directions this change breaks

    def schema(self) -> str:
        changed = copy.deepcopy(BASE)
        self.apply(changed)
        return json.dumps(changed)


CHANGES = (
    Change(
        "field_added_with_default",
        lambda s: s["fields"].append({"name": "extra", "type": "string", "default": "n/a"}),
        "extra",
        frozenset(),
    ),
    Change(
        "field_added_without_default",
        lambda s: s["fields"].append({"name": "extra", "type": "string"}),
        "extra",
        frozenset({"BACKWARD"}),  # the new reader finds no value and no default
    ),
    Change(
        "field_removed_that_had_a_default",
        lambda s: s["fields"].remove(_field(s, "legacy")),
        "legacy",
        frozenset(),  # the old reader falls back on the default
    ),
    Change(
        "field_removed_without_default",
        lambda s: s["fields"].remove(_field(s, "code")),
        "code",
        frozenset({"FORWARD"}),  # the old reader finds no value and no default
    ),
    Change(
        "type_promoted_int_to_long",
        lambda s: _field(s, "amount").update(type="long"),
        "amount",
        frozenset({"FORWARD"}),  # int promotes to long, never the reverse
    ),
    Change(
        "type_narrowed_long_to_int",
        lambda s: _field(s, "big").update(type="int"),
        "big",
        frozenset({"BACKWARD"}),
    ),
    Change(
        "enum_symbol_added",
        lambda s: _field(s, "channel")["type"]["symbols"].append("MOTO"),
        "channel",
        frozenset({"FORWARD"}),  # the old reader lacks MOTO (and the enum has no default)
    ),
    Change(
        "enum_symbol_removed",
        lambda s: _field(s, "channel")["type"]["symbols"].remove("ATM"),
        "channel",
        frozenset({"BACKWARD"}),
    ),
    Change(
        "union_widened",
        lambda s: _field(s, "note").update(type=["null", "string", "int"]),
        "note",
        frozenset({"FORWARD"}),  # the old reader's union has no int branch
    ),
    Change(
        "union_narrowed",
        lambda s: _field(s, "memo").update(type=["null", "string"]),
        "memo",
        frozenset({"BACKWARD"}),
    ),
)

# Three-version chains where v3 follows v2 but not v1 in one direction.
# A: "extra" gains a default in v2 and loses it in v3; v3 cannot read v1 (BACKWARD).
# B: "extra" has no default in v1, gets one in v2 and is dropped in v3; v1 cannot read
#    v3 (FORWARD).
_ID = {"name": "id", "type": "string"}
_TS = {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}}


def _chain_schema(*fields: dict[str, Any]) -> str:
    return json.dumps(
        {
            "type": "record",
            "name": "Chained",
            "namespace": "com.example.compat",
            "featurestore": {"entity": ["id"], "event_time": "ts"},
            "fields": [_ID, *fields, _TS],
        }
    )


CHAINS = {
    "A": (
        _chain_schema(),
        _chain_schema({"name": "extra", "type": "string", "default": "x"}),
        _chain_schema({"name": "extra", "type": "string"}),
    ),
    "B": (
        _chain_schema({"name": "extra", "type": "string"}),
        _chain_schema({"name": "extra", "type": "string", "default": "x"}),
        _chain_schema(),
    ),
}
CHAIN_BREAKS = {"A": "BACKWARD", "B": "FORWARD"}


def avro(text: str) -> Schema:
    return Schema(text, "AVRO")


def refused(level: str, breaks: frozenset[str] | set[str]) -> bool:
    return bool(DIRECTIONS[level] & breaks)


@pytest.fixture(scope="module")
def per_level(services: Services) -> Iterator[dict[str, RunningRegistry]]:
    """One registry per level. Every change gets a subject of its own there, set to the
    level and holding BASE as version 1; every chain one holding its v1 and v2."""
    registries: dict[str, RunningRegistry] = {}

    def prepare(level: str) -> RunningRegistry:
        topic = fresh_topic(f"compat-{level}")
        registry = registries[level] = RunningRegistry(services.kafka_bootstrap, topic)
        registry.start()
        client = registry.client()
        base = json.dumps(BASE)
        for change in CHANGES:
            assert client.set_compatibility(change.name, level) == {"compatibility": level}
            client.register_schema(change.name, avro(base))
        for chain, (v1, v2, _v3) in CHAINS.items():
            subject = f"chain-{chain}"
            client.set_compatibility(subject, level)
            client.register_schema(subject, avro(v1))
            client.register_schema(subject, avro(v2))
            assert client.get_versions(subject) == [1, 2]
        return registry

    try:
        with ThreadPoolExecutor(len(LEVELS)) as pool:
            list(pool.map(prepare, LEVELS))
        yield registries
    finally:
        for registry in registries.values():
            registry.stop()
        delete_topics(services, [r.topic for r in registries.values()])


def _raw_check(registry: RunningRegistry, subject: str, schema: str) -> dict[str, Any]:
    response = httpx.post(
        f"{registry.url}/compatibility/subjects/{subject}/versions",
        params={"verbose": "true"},
        json={"schema": schema},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.schemaregistry.v1+json"
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: c.name)
@pytest.mark.parametrize("level", LEVELS)
def test_level_decides_each_change(
    per_level: dict[str, RunningRegistry], level: str, change: Change
) -> None:
    registry = per_level[level]
    client = registry.client()
    subject = change.name
    new = change.schema()
    expect_refusal = refused(level, change.breaks)

    assert client.get_compatibility(subject) == level
    assert client.test_compatibility(subject, avro(new), verbose=True) is not expect_refusal
    assert client.test_compatibility_all_versions(subject, avro(new)) is not expect_refusal

    raw = _raw_check(registry, subject, new)
    assert raw["is_compatible"] is not expect_refusal
    if expect_refusal:
        assert raw["messages"], raw
        assert any(f"'{change.field}'" in m for m in raw["messages"]), raw["messages"]
    else:
        assert raw["messages"] == []

    if expect_refusal:
        with pytest.raises(SchemaRegistryError) as error:
            client.register_schema(subject, avro(new))
        assert error.value.http_status_code == 409
        assert error.value.error_code == 409
        assert f"'{change.field}'" in error.value.error_message
        assert subject in error.value.error_message
        assert registry.client().get_versions(subject) == [1]
    else:
        schema_id = client.register_schema(subject, avro(new))
        latest = registry.client().get_latest_version(subject)
        assert (latest.version, latest.schema_id) == (2, schema_id)


@pytest.mark.parametrize("chain", sorted(CHAINS))
@pytest.mark.parametrize("level", LEVELS)
def test_transitive_levels_check_every_earlier_version(
    per_level: dict[str, RunningRegistry], level: str, chain: str
) -> None:
    """v3 follows v2 but not v1: only the transitive forms of the broken direction refuse."""
    registry = per_level[level]
    client = registry.client()
    subject = f"chain-{chain}"
    v3 = CHAINS[chain][2]
    transitive_refusal = level.endswith("_TRANSITIVE") and refused(level, {CHAIN_BREAKS[chain]})

    # Against the latest version alone, v3 is fine under every level.
    assert client.test_compatibility(subject, avro(v3), version="latest")
    assert client.test_compatibility(subject, avro(v3), version=2)
    # Against version 1 alone, it breaks the chain's direction.
    assert client.test_compatibility(subject, avro(v3), version=1) is not refused(
        level, {CHAIN_BREAKS[chain]}
    )
    # Against the versions the level selects.
    assert client.test_compatibility_all_versions(subject, avro(v3)) is not transitive_refusal

    if transitive_refusal:
        raw = _raw_check(registry, subject, v3)
        assert raw["is_compatible"] is False
        assert all("version 1" in m for m in raw["messages"]), raw["messages"]
        with pytest.raises(SchemaRegistryError) as error:
            client.register_schema(subject, avro(v3))
        assert (error.value.http_status_code, error.value.error_code) == (409, 409)
        assert "'extra'" in error.value.error_message
        assert "version 1" in error.value.error_message
        assert registry.client().get_versions(subject) == [1, 2]
    else:
        client.register_schema(subject, avro(v3))
        assert registry.client().get_versions(subject) == [1, 2, 3]


def test_subject_level_overrides_global_until_deleted(
    services: Services, start_registry: Callable[..., RunningRegistry]
) -> None:
    registry = start_registry(topic=fresh_topic("global-config"))
    client = registry.client()
    base = json.dumps(BASE)
    narrowed = next(c for c in CHANGES if c.name == "type_narrowed_long_to_int").schema()
    assert client.get_compatibility() == "BACKWARD"  # the default
    assert client.set_compatibility(level="FULL") == {"compatibility": "FULL"}
    assert client.get_compatibility() == "FULL"
    assert client.set_compatibility("relaxed", "NONE") == {"compatibility": "NONE"}
    assert client.get_compatibility("relaxed") == "NONE"

    for subject in ("relaxed", "strict"):
        client.register_schema(subject, avro(base))
    # The global FULL refuses a BACKWARD break; the subject's NONE lets it through.
    with pytest.raises(SchemaRegistryError) as error:
        client.register_schema("strict", avro(narrowed))
    assert error.value.error_code == 409
    assert "'big'" in error.value.error_message
    client.register_schema("relaxed", avro(narrowed))
    assert client.get_versions("relaxed") == [1, 2]

    # No subject-level config on "strict": 40408, unless asked for the fallback.
    with pytest.raises(SchemaRegistryError) as missing:
        client.get_compatibility("strict")
    assert (missing.value.http_status_code, missing.value.error_code) == (404, 40408)
    fallback = httpx.get(f"{registry.url}/config/strict", params={"defaultToGlobal": "true"})
    assert fallback.json() == {"compatibilityLevel": "FULL"}

    # DELETE /config/{subject} answers the old level and falls back to the global FULL.
    deleted = client.delete_config("relaxed")
    assert deleted.compatibility_level is not None
    assert deleted.compatibility_level.value == "NONE"
    with pytest.raises(SchemaRegistryError) as gone:
        client.get_compatibility("relaxed")
    assert gone.value.error_code == 40408
    fallback = httpx.get(f"{registry.url}/config/relaxed", params={"defaultToGlobal": "true"})
    assert fallback.json() == {"compatibilityLevel": "FULL"}
    # v2 has big: int; going back to long now breaks FORWARD, which FULL checks. (A new
    # doc makes it a new schema: BASE itself is version 1 and would just be found.)
    widened = json.dumps({**BASE, "doc": "big is a long again"})
    with pytest.raises(SchemaRegistryError) as now_refused:
        client.register_schema("relaxed", avro(widened))
    assert now_refused.value.error_code == 409
    assert "'big'" in now_refused.value.error_message
    assert not client.test_compatibility("relaxed", avro(widened))

    # Deleting the global config falls back to the default, BACKWARD: long reads int.
    previous = client.delete_config().compatibility_level
    assert previous is not None
    assert previous.value == "FULL"
    assert client.get_compatibility() == "BACKWARD"
    assert client.test_compatibility("relaxed", avro(widened))
    client.register_schema("relaxed", avro(widened))
    assert registry.client().get_versions("relaxed") == [1, 2, 3]

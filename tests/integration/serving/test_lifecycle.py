"""View versions on real Redis: the lifecycle's rules and log, promote and rollback
switching what the in-process client and the HTTP server return (never a mixed
answer, no failed lookup while an operator flips versions under load), retiring in
batches, and the `featurestore views` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from featurestore.errors import ConfigError
from featurestore.online import RedisOnlineStore, connect, connect_async
from featurestore.online.lifecycle import Lifecycle
from featurestore.serving import AsyncFeatureClient, Catalog, FeatureClient
from featurestore.serving.server import ServerOptions, create_app
from tests.integration.serving.conftest import AT, HOUR, fixed_clock, payments, running

pytestmark = pytest.mark.integration

VERSIONS = """
name = "payments"
topics = ["payments"]
subject = "payments-value"

[sinks.online]
prefix = "{prefix}"
redis_url = "{redis_url}"

[[entities]]
name = "card"
join_keys = ["card_id"]

[[views]]
name = "card_spend"
version = 1
source = "payments-value"
entity = "card"
owner = "payments-team@example.com"

[[views.aggregations]]
column = "amount"
functions = ["count", "sum"]
windows = ["1h/5m", "24h/1h"]

[[views]]
name = "card_spend"
version = 2
source = "payments-value"
entity = "card"
owner = "payments-team@example.com"

[[views.aggregations]]
column = "amount"
functions = ["count", "sum", "max"]
windows = ["1h/5m", "24h/1h"]
"""
REFS = ["card_spend:amount_count_1h", "card_spend:amount_sum_1h", "card_spend:amount_sum_24h"]
CARDS = [f"card_{i:04d}" for i in range(10)]
BODY = {"entities": {"card_id": CARDS}, "features": REFS}


class Versions:
    """Two versions of card_spend with different data (v2 saw every amount x10), and
    what each serves at the fixed clock."""

    def __init__(self, folder: Path, prefix: str, redis_url: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "payments.toml").write_text(VERSIONS.format(prefix=prefix, redis_url=redis_url))
        self.definitions, self.redis_url, self.prefix = folder, redis_url, prefix
        self.catalog = Catalog.load(folder)
        self.store = RedisOnlineStore(connect(redis_url), self.catalog.join_keys, prefix)
        self.lifecycle = Lifecycle(self.store.client, prefix)
        self.v1, self.v2 = (self.catalog.view("card_spend", v) for v in (1, 2))
        events = payments(CARDS, AT - 2 * HOUR, AT - 1000, 400, seed=3)
        self.store.register(self.v1, set())
        self.store.apply(self.v1, events, "ts")
        self.expected = {1: self._values(self.v1)}

    def write_v2(self) -> None:
        events = payments(CARDS, AT - 2 * HOUR, AT - 1000, 400, seed=3)
        self.store.register(self.v2, set())
        self.store.apply(self.v2, events.with_columns(pl.col("amount") * 10), "ts")
        self.expected[2] = self._values(self.v2)

    def _values(self, view: Any) -> dict[str, list[Any]]:
        names = [r.split(":")[1] for r in REFS]
        frame = self.store.read(view, pl.DataFrame({"card_id": CARDS}), AT, names)
        return frame.to_dict(as_series=False)

    def client(self) -> FeatureClient:
        return FeatureClient.connect(self.definitions, clock=fixed_clock)

    def app(self) -> Any:
        def make() -> AsyncFeatureClient:
            return AsyncFeatureClient(Catalog.load(self.definitions),
                                      connect_async(self.redis_url), clock=fixed_clock)  # fmt: skip

        return create_app(make, ServerOptions())


@pytest.fixture
def versions(tmp_path: Path, services: Any, redis_prefix: str) -> Iterator[Versions]:
    made = Versions(tmp_path / "definitions", redis_prefix.rstrip(":"), services.redis_url)
    yield made
    made.store.client.close()


def test_the_lifecycle_checks_every_change_and_logs_who_did_it(versions: Versions) -> None:
    life = versions.lifecycle
    assert life.ensure_active("card_spend", 1, "consumer payments").active == 1
    assert life.ensure_active("card_spend", 2, "consumer payments").active == 1  # first wins
    with pytest.raises(ConfigError, match="no online state: backfill it"):
        life.promote("card_spend", 2, "ana")
    assert life.shadow("card_spend", 2, "ana").shadow == [2]
    assert life.state("card_spend").computed == {1, 2}
    versions.write_v2()
    promoted = life.promote("card_spend", 2, "ana")
    assert (promoted.active, promoted.previous, promoted.shadow) == (2, [1], [])
    with pytest.raises(ConfigError, match="is active: promote another version"):
        life.retire("card_spend", 2, "bo")
    back = life.rollback("card_spend", "bo")
    assert (back.active, back.previous, back.shadow) == (1, [], [2])  # 2 stays current
    with pytest.raises(ConfigError, match="no previous version to roll back to"):
        life.rollback("card_spend", "bo")
    life.promote("card_spend", 2, "ana")
    assert life.retire("card_spend", 1, "ana").retired == [1]
    with pytest.raises(ConfigError, match="is retired"):
        life.promote("card_spend", 1, "ana")
    log = life.history("card_spend")
    assert [(e["action"], e["who"], e["active_after"]) for e in log] == [
        ("retire", "ana", 2), ("promote", "ana", 2), ("rollback", "bo", 1),
        ("promote", "ana", 2), ("shadow", "ana", 1), ("activate", "consumer payments", 1),
    ]  # fmt: skip
    assert all(abs(e["at"] - time.time() * 1000) < 60_000 for e in log)


def test_retiring_deletes_the_version_keys_in_batches(versions: Versions) -> None:
    many = [f"card_{i:05d}" for i in range(1_234)]
    versions.store.apply(versions.v1, payments(many, AT - HOUR, AT, 3_000, seed=9), "ts")
    versions.write_v2()
    versions.lifecycle.ensure_active("card_spend", 2, "t")
    pattern = f"{versions.prefix}:card_spend:v1:*"
    before = len(list(versions.store.client.scan_iter(match=pattern, count=1000)))
    assert before > 1_000
    versions.lifecycle.retire("card_spend", 1, "t")
    batches = list(versions.lifecycle.delete_keys("card_spend", 1, batch=300))
    assert sum(batches) == before
    assert max(batches) <= 300
    assert not list(versions.store.client.scan_iter(match=pattern, count=1000))
    assert not versions.store.client.exists(f"{versions.prefix}:card_spend:v1")
    assert versions.store.client.exists(f"{versions.prefix}:card_spend:v2")


def test_promote_and_rollback_switch_the_client_and_the_server(versions: Versions) -> None:
    versions.write_v2()
    versions.lifecycle.ensure_active("card_spend", 1, "t")
    client = versions.client()
    with running(versions.app()) as url:

        def served() -> tuple[int, dict[str, list[Any]], int, dict[str, list[Any]]]:
            local = client.get_online_features({"card_id": CARDS}, REFS)
            body = httpx.post(f"{url}/features", json=BODY).json()
            remote = {f["name"]: f["values"] for f in body["features"]}
            local_values = local.values.to_dict(as_series=False)
            return (
                local.version("amount_sum_1h"),
                local_values,
                body["features"][0]["version"],
                remote,
            )

        assert served() == (1, versions.expected[1], 1, versions.expected[1])
        versions.lifecycle.promote("card_spend", 2, "t")
        assert served() == (2, versions.expected[2], 2, versions.expected[2])
        versions.lifecycle.rollback("card_spend", "t")
        assert served() == (1, versions.expected[1], 1, versions.expected[1])
        pinned = client.get_online_features({"card_id": CARDS}, ["card_spend@2:amount_max_1h"])
        assert pinned.version("amount_max_1h") == 2  # a shadow-style read by version
        one = httpx.get(f"{url}/features/card_spend/{CARDS[0]}").json()
        assert one["version"] == 1
        listed = httpx.get(f"{url}/views").json()["views"][0]
        assert (listed["version"], listed["roles"]) == (1, {"1": "active", "2": "shadow"})


def test_flipping_versions_under_load_fails_no_lookup_and_mixes_none(versions: Versions) -> None:
    versions.write_v2()
    versions.lifecycle.ensure_active("card_spend", 1, "t")
    seen: list[tuple[int, dict[str, list[Any]]]] = []
    failures: list[str] = []
    stop = threading.Event()

    def in_process() -> None:
        client = versions.client()
        while not stop.is_set():
            try:
                got = client.get_online_features({"card_id": CARDS}, REFS)
                seen.append((got.version("amount_sum_1h"), got.values.to_dict(as_series=False)))
            except Exception as exc:  # every failure is a finding
                failures.append(repr(exc))

    def over_http(url: str) -> None:
        with httpx.Client() as http:
            while not stop.is_set():
                response = http.post(f"{url}/features", json=BODY)
                if response.status_code != 200:
                    failures.append(response.text)
                    continue
                features = response.json()["features"]
                versions_read = {f["version"] for f in features}
                if len(versions_read) != 1:
                    failures.append(f"mixed versions {versions_read}")
                seen.append((features[0]["version"], {f["name"]: f["values"] for f in features}))

    with running(versions.app()) as url:
        workers = [
            threading.Thread(target=in_process),
            threading.Thread(target=over_http, args=(url,)),
        ]
        for worker in workers:
            worker.start()
        try:
            for _ in range(10):
                time.sleep(0.15)
                versions.lifecycle.promote("card_spend", 2, "flipper")
                time.sleep(0.15)
                versions.lifecycle.rollback("card_spend", "flipper")
        finally:
            stop.set()
            for worker in workers:
                worker.join(30)
    assert failures == []
    assert {version for version, _ in seen} == {1, 2}
    for version, values in seen:
        assert values == versions.expected[version]  # all of one version, never a mix
    assert len(versions.lifecycle.history("card_spend", limit=100)) >= 21


def test_views_commands(versions: Versions) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "featurestore.cli", "views", *args,
             "--definitions", str(versions.definitions)],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip

    versions.lifecycle.ensure_active("card_spend", 1, "consumer payments")
    refused = cli("promote", "card_spend", "--version", "2")
    assert refused.returncode == 1
    assert "no online state" in refused.stderr
    assert "Traceback" not in refused.stderr
    shadow = cli("shadow", "card_spend", "--version", "2")
    assert shadow.returncode == 0, shadow.stderr
    assert "no backfill" in shadow.stderr
    versions.write_v2()
    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    rows = [line for line in listed.stdout.splitlines() if "card_spend" in line]
    assert "active" in rows[0]
    assert "shadow" in rows[1]
    compared = cli("compare", "card_spend", "--versions", "1", "2", "--json")
    assert compared.returncode == 0, compared.stderr
    by_feature = {d["feature"]: d for d in json.loads(compared.stdout)}
    assert by_feature["amount_count_1h"]["differ"] == 0  # same events, same counts
    assert by_feature["amount_sum_1h"]["share"] > 0.5  # v2 saw amounts x10
    assert by_feature["amount_sum_1h"]["abs_diff"]["max"] > 0
    assert "amount_max_1h" not in by_feature  # only v2 has it
    assert cli("promote", "card_spend", "--version", "2", "--who", "ana").returncode == 0
    assert cli("rollback", "card_spend").returncode == 0
    retired = cli("retire", "card_spend", "--version", "2")
    assert retired.returncode == 0, retired.stderr
    assert "keys deleted" in retired.stderr
    log = cli("log", "card_spend")
    assert log.returncode == 0, log.stderr
    assert "ana" in log.stdout
    assert "rollback" in log.stdout
    assert "retire" in log.stdout

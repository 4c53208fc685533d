"""Monitoring end to end on real Kafka and Redis: a baseline from a stable period, then
a stream whose amounts shift raises drift alerts for the amount features and inputs
only, naming the view's owner, while a stable stream raises none; a burst of contract
violations raises a violation-rate alert that resolves once the burst has left the
window. The HTML report holds its charts, and the skew audit finds online == offline."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from featurestore.contracts.registry.client import RegistryClient
from featurestore.monitor.alerts import read_alerts
from featurestore.monitor.baseline import build_baseline
from featurestore.online import RedisOnlineStore, connect
from featurestore.stream import ConsumerRuntime, load_definition
from tests.conftest import Services
from tests.e2e.test_features import MINUTE, produce
from tests.integration.registry.conftest import RunningRegistry

pytestmark = pytest.mark.integration
OWNER = "fraud-team@example.com"
DEFINITION = """
name = "watched"
topics = ["{topic}"]
subject = "payments-value"
group = "fs-watched-{topic}"
batch_size = 100
batch_wait_ms = 100

[sinks.online]
prefix = "{prefix}"
redis_url = "{redis_url}"

[monitoring]
check_interval = "1s"
window = "6s"
min_events = 50
violation_rate = 0.05
rule_rate = 0.05
freshness = "1h"
alerts_topic = "{alerts}"

[[entities]]
name = "card"
join_keys = ["card_id"]

[[views]]
name = "card_risk"
source = "payments-value"
entity = "card"
owner = "{owner}"

[views.drift]
min_count = 100
window = "1h"

[[views.aggregations]]
column = "amount"
functions = ["mean", "max"]
windows = ["1h/5m"]

[[views.aggregations]]
column = "country"
functions = ["last"]
windows = ["1h/5m"]
"""


def payments(  # noqa: PLR0917
    n: int, start: int, end: int, seed: int, scale: float = 1.0, negative: float = 0.0
) -> list[tuple[int, dict[str, Any]]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        amount = round(rng.lognormvariate(3, 0.5) * scale, 2)
        out.append((0, {
            "payment_id": f"p-{seed}-{i}", "card_id": f"card_{rng.randrange(200):06d}",
            "amount": -amount if rng.random() < negative else amount, "currency": "EUR",
            "merchant_id": "m-1", "merchant_category": "5411",
            "country": rng.choice(["DE", "FR", "NL", "PL"]),
            "channel": rng.choice(["POS", "ONLINE"]), "ip_address": None,
            "ts": start + (end - start) * i // n,
        }))  # fmt: skip
    return out


def alerts_on(services: Services, topic: str) -> list[dict[str, Any]]:
    return read_alerts({"bootstrap.servers": services.kafka_bootstrap}, topic)


class Run:
    def __init__(self, services: Services, registry: RunningRegistry, topic: str,
                 prefix: str, tmp_path: Path) -> None:  # fmt: skip
        self.services, self.registry, self.topic = services, registry, topic
        self.alerts = f"{topic}.alerts"
        self.folder = tmp_path / "definitions"
        self.folder.mkdir()
        (self.folder / "watched.toml").write_text(DEFINITION.format(
            topic=topic, prefix=prefix, redis_url=services.redis_url, alerts=self.alerts,
            owner=OWNER))  # fmt: skip
        self.definition = load_definition(self.folder / "watched.toml")
        self.offline = tmp_path / "offline"
        self.store = RedisOnlineStore(connect(services.redis_url),
                                      self.definition.join_keys, prefix)  # fmt: skip

    def feed(self, events: list[tuple[int, dict[str, Any]]]) -> None:
        produce(self.services, self.registry, self.topic, events)
        runtime = ConsumerRuntime(self.definition,
                                  {"bootstrap.servers": self.services.kafka_bootstrap},
                                  RegistryClient(self.registry.url), str(self.offline),
                                  online=self.store)  # fmt: skip
        deadline = time.monotonic() + 120
        runtime.run(until=lambda s: s.events_in >= len(events) or time.monotonic() > deadline)
        assert runtime.stats.events_in == len(events)

    def baseline(self, start: int, end: int) -> None:
        view = self.definition.views[0]
        built = build_baseline(view, join_keys=["card_id"], offline_root=str(self.offline),
                               event_time="ts", start=start, end=end,
                               pii={"ip_address"})  # fmt: skip
        built.save(self.store.client, self.store.prefix)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "FEATURESTORE_REGISTRY_URL": self.registry.url, "COLUMNS": "200"}
        return subprocess.run(
            [sys.executable, "-m", "featurestore.cli", *args, "--definitions",
             str(self.folder)], env=env, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip


def drift_alerts(run: Run) -> list[dict[str, Any]]:
    return [a for a in alerts_on(run.services, run.alerts) if a["kind"] == "drift"]


@pytest.mark.parametrize("shifted", [True, False], ids=["shifted", "stable"])
def test_drift_alerts_name_the_owner_for_the_shifted_features_only(  # noqa: PLR0917
    services: Services, registry: RunningRegistry, new_topic: Any, redis_prefix: str,
    tmp_path: Path, shifted: bool,
) -> None:  # fmt: skip
    run = Run(services, registry, new_topic(partitions=1), redis_prefix.rstrip(":"), tmp_path)
    now = int(time.time() * 1000)
    # One steady stream of 32 payments a minute over 200 cards: the training period,
    # then the last 19 minutes, whose amounts are x5 when shifted. The live features are
    # read as the consumer writes, at now, over 1h windows that hold both.
    run.feed(payments(3_200, now - 120 * MINUTE, now - 20 * MINUTE, seed=1))
    run.baseline(now - 90 * MINUTE, now - 20 * MINUTE)
    run.feed(payments(608, now - 19 * MINUTE, now - MINUTE, seed=2, scale=5.0 if shifted else 1.0))
    found = drift_alerts(run)
    if not shifted:
        assert found == []
        return
    names = {a["name"] for a in found if a["status"] == "firing"}
    assert "input amount" in names
    assert {"amount_mean_1h", "amount_max_1h"} & names
    assert not [n for n in names if "country" in n]
    assert {a["owner"] for a in found} == {OWNER}
    assert {a["subject"] for a in found} == {"card_risk v1"}
    assert all(a["value"] > a["threshold"] for a in found if a["status"] == "firing")

    report = run.cli("monitor", "report", "card_risk", "--output", str(tmp_path / "r.html"))
    assert report.returncode == 0, report.stderr
    assert "amount_mean_1h" in report.stdout
    assert "psi" in report.stdout
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") == 5  # 3 features and 2 inputs
    assert OWNER in page
    assert "drifted" in page
    skew = run.cli("audit", "skew", "card_risk", "--offline-path", str(run.offline))
    assert skew.returncode == 0, skew.stdout + skew.stderr
    assert "0 mismatches" in skew.stderr


def test_a_violation_burst_fires_then_resolves(
    services: Services, registry: RunningRegistry, new_topic: Any, redis_prefix: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    run = Run(services, registry, new_topic(partitions=1), redis_prefix.rstrip(":"), tmp_path)
    now = int(time.time() * 1000)
    run.feed(payments(300, now - 5 * MINUTE, now - 4 * MINUTE, seed=3, negative=0.4))
    time.sleep(7)  # the window is 6 s: the burst leaves it
    run.feed(payments(300, now - 3 * MINUTE, now - MINUTE, seed=4))
    found = [a for a in alerts_on(services, run.alerts) if a["kind"] == "violation_rate"]
    by_name = {(a["name"], a["status"]) for a in found}
    assert ("all rules", "firing") in by_name
    assert ("all rules", "resolved") in by_name
    assert ("amount:min", "firing") in by_name
    assert ("amount:min", "resolved") in by_name
    assert {a["owner"] for a in found} == {"payments-team@example.com"}
    firing = next(a for a in found if a["name"] == "all rules")
    assert firing["value"] > 0.3
    assert firing["threshold"] == 0.05
    assert [a["status"] for a in found if a["name"] == "all rules"] == ["firing", "resolved"]

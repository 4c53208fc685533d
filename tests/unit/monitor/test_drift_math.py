"""Profiles, drift statistics, rolling counts and fire-once alerts (pure)."""

from __future__ import annotations

import json
import math
import random

import polars as pl
import pytest

from featurestore.contracts.violations import Reason, Rejection
from featurestore.features.definitions import FeatureView
from featurestore.monitor.alerts import Alert, Alerts
from featurestore.monitor.config import Monitoring
from featurestore.monitor.drift import Baseline
from featurestore.monitor.health import ContractHealth
from featurestore.monitor.profile import OTHER, Profile, js, ks, psi
from featurestore.monitor.rolling import RollingCounts


def normal(n: int, mean: float, seed: int) -> pl.Series:
    rng = random.Random(seed)
    return pl.Series([rng.gauss(mean, 1) for _ in range(n)])


def test_numeric_profiles_bin_by_baseline_deciles_and_psi_ks_see_a_shift() -> None:
    base = Profile.baseline(normal(20_000, 0, 1))
    assert len(base.edges) == 9
    assert base.shares == pytest.approx([0.1] * 10, abs=1e-3)
    same = base.on_bins(normal(5_000, 0, 2))
    shifted = base.on_bins(normal(5_000, 0.6, 3))
    assert psi(base, same) < 0.02
    assert ks(base, same) < 0.03
    assert psi(base, shifted) > 0.2
    assert ks(base, shifted) > 0.2
    assert psi(base, base) == pytest.approx(0.0)
    assert ks(base, base) == 0.0
    counts, nulls = base.counts(pl.Series([None, -10.0, 10.0, float("nan")]))
    assert (sum(counts), nulls) == (2, 1)  # NaN is no value, null is a null
    again = Profile.from_counts(base, *base.counts(normal(5_000, 0.6, 3)))
    assert again.shares == pytest.approx(shifted.shares)


def test_categorical_profiles_pool_the_tail_and_js_is_bounded() -> None:
    values = pl.Series([f"c{i % 30}" for i in range(3_000)] + [None] * 300)
    base = Profile.baseline(values)
    assert base.kind == "categorical"
    assert len(base.categories) == 21  # the top 20 and the rest
    assert base.null_rate == pytest.approx(300 / 3_300)
    assert js(base, base.on_bins(values)) == pytest.approx(0.0, abs=1e-12)
    other = base.on_bins(pl.Series(["new"] * 100))
    assert other.categories[OTHER] == 1.0
    assert 0.3 < js(base, other) <= 1.0  # the baseline had a third in its tail
    flipped = Profile.from_counts(base, *base.counts(pl.Series(["c0"] * 50)))
    assert flipped.categories["c0"] == 1.0


def test_a_withheld_profile_keeps_only_the_null_rate() -> None:
    ips = pl.Series([f"pii-canary-{i}" for i in range(200)] + [None] * 50)
    base = Profile.withheld(ips)
    assert "canary" not in json.dumps(base.to_dict())
    assert base.null_rate == pytest.approx(50 / 250)
    live = Profile.from_counts(base, *base.counts(pl.Series(["pii-canary-x"] * 10 + [None] * 90)))
    assert "canary" not in json.dumps(live.to_dict())
    assert js(base, live) == 0.0
    assert live.null_rate - base.null_rate == pytest.approx(0.7)  # a null-rate rise still shows
    refs = Profile.withheld(pl.Series([7_301_000_000_000_000_001 + i for i in range(100)]))
    assert (refs.edges, refs.shares) == ([], [1.0])
    assert psi(refs, refs.on_bins(pl.Series([1, 2, 3]))) == pytest.approx(0.0)


def test_a_baseline_withholds_pii_inputs_and_the_features_that_are_their_values() -> None:
    view = FeatureView.model_validate({
        "name": "card_risk", "source": "payments-value", "entity": "card", "owner": "o@x",
        "aggregations": [
            {"column": "amount", "functions": ["max"], "windows": ["1h"]},
            {"column": "ip_address", "functions": ["distinct", "last"], "windows": ["1h"]},
        ],
    })  # fmt: skip
    n = 100
    ips = [f"pii-canary-{i}" for i in range(n)]
    features = pl.DataFrame({"amount_max_1h": [float(i) for i in range(n)],
                             "ip_address_distinct_1h": [i % 7 for i in range(n)],
                             "ip_address_last_1h": ips})  # fmt: skip
    inputs = pl.DataFrame({"amount": [float(i) for i in range(n)], "ip_address": ips})
    baseline = Baseline.of(view, features, inputs, 0, 1, pii={"ip_address"})
    assert "canary" not in baseline.to_json()
    assert baseline.inputs["ip_address"].categories == {OTHER: 1.0}
    assert baseline.features["ip_address_last_1h"].categories == {OTHER: 1.0}
    assert len(baseline.features["ip_address_distinct_1h"].edges) > 1  # a count: kept
    assert len(baseline.inputs["amount"].edges) == 9
    exposed = Baseline.of(view, features, inputs, 0, 1, pii=())
    assert "canary" in exposed.to_json()  # what it would have kept


def test_rolling_counts_forget_what_left_the_window() -> None:
    rolling = RollingCounts(10_000, buckets=10)
    rolling.add({"a": 1, "v": [1, 2]}, 0)
    rolling.add({"a": 2, "v": [3, 4]}, 5_000)
    assert rolling.totals(9_999) == {"a": [3.0], "v": [4.0, 6.0]}
    assert rolling.totals(12_000) == {"a": [2.0], "v": [3.0, 4.0]}
    assert rolling.totals(30_000) == {}


def test_an_alert_fires_once_per_breach_and_resolves_once() -> None:
    alerts = Alerts(None)
    alert = Alert("drift", "card_spend v1", "amount_sum_1h", "psi", 0.5, 0.2, "last 15m", "o")
    assert [alerts.check(alert, b) for b in (True, True, True, False, False, True)] == [
        "firing", None, None, "resolved", None, "firing"
    ]  # fmt: skip


def test_contract_health_alerts_on_violation_and_null_rates_then_resolves() -> None:
    alerts = Alerts(None)
    settings = Monitoring(window="10s", min_events=10, violation_rate=0.1, rule_rate=0.05,
                          null_rate=0.5, freshness="1m", lag=100)  # fmt: skip
    health = ContractHealth("payments-value", "payments-team", settings, alerts,
                            fields=["amount", "country"], event_time=None)  # fmt: skip
    valid = pl.DataFrame({"amount": [1.0] * 80, "country": [None] * 80})
    bad = [Rejection(i, Reason.CONSTRAINT_VIOLATION, "x", "amount", "min") for i in range(20)]
    health.observe(100, bad, valid, now_ms=1_000)
    health.check(2_000, {"payments[0]": 500})
    firing = {(k[0], k[2]) for k in alerts.firing}
    assert firing == {("violation_rate", "all rules"), ("violation_rate", "amount:min"),
                      ("null_rate", "country"), ("lag", "payments[0]")}  # fmt: skip
    clean = pl.DataFrame({"amount": [1.0] * 100, "country": ["DE"] * 100})
    health.observe(100, [], clean, now_ms=15_000)  # the bad batch left the window
    health.check(16_000, {"payments[0]": 0})
    assert alerts.firing == {}
    assert math.isclose(settings.ms("window"), 10_000)

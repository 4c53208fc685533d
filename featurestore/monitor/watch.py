"""What one consumer watches: its contract's health and its served views' drift.

The consumer reports each committed batch (`observe`) and asks, after it, whether a
check is due (`check_interval`); a check reloads which view versions are served and
which have a baseline (so a new baseline or a promotion is picked up), then evaluates
contract health and every view's drift, and flushes the alerts.
"""

from __future__ import annotations

import logging
from typing import Any

import polars as pl

from featurestore.contracts.violations import Rejection
from featurestore.features.definitions import FeatureView
from featurestore.monitor.alerts import Alert, Alerts
from featurestore.monitor.config import Monitoring
from featurestore.monitor.drift import Baseline, ViewDrift
from featurestore.monitor.health import ContractHealth
from featurestore.online.lifecycle import Lifecycle
from featurestore.online.memory import Memory
from featurestore.online.store import RedisOnlineStore

log = logging.getLogger(__name__)


class Watch:
    """Contract health and view drift of one consumer, with their alerts."""

    def __init__(self, settings: Monitoring, alerts: Alerts, health: ContractHealth,
                 views: list[FeatureView], store: RedisOnlineStore | None) -> None:  # fmt: skip
        self.settings, self.alerts, self.health = settings, alerts, health
        self.views = {(v.name, v.version): v for v in views}
        self.store = store
        self.drifts: dict[tuple[str, int], ViewDrift] = {}
        self.interval_ms = settings.ms("check_interval")
        self.next_check_ms = 0
        self.next_refresh_ms = 0

    def start(self) -> None:
        """Watch the views' drift from the first batch on."""
        self._refresh()

    def observe(
        self, consumed: int, rejections: list[Rejection], valid: pl.DataFrame, now_ms: int
    ) -> None:
        if now_ms >= self.next_refresh_ms:  # a new baseline or promotion counts at once
            self.next_refresh_ms = now_ms + 1_000
            self._refresh()
        # Every read first: if Redis fails, a retry adds nothing twice.
        counted = [(drift, drift.counted(valid, now_ms)) for drift in self.drifts.values()]
        for drift, counts in counted:
            drift.add(counts, now_ms)
        self.health.observe(consumed, rejections, valid, now_ms)

    def due(self, now_ms: int) -> bool:
        return now_ms >= self.next_check_ms

    def check(self, now_ms: int, lag: dict[str, int], *, flush_timeout: float = 5.0) -> None:
        self.next_check_ms = now_ms + self.interval_ms
        self._refresh()
        self.health.check(now_ms, lag)
        for drift in self.drifts.values():
            drift.check(now_ms)
        self.alerts.flush(flush_timeout)

    def online_full(self, view: FeatureView, used: Memory | None) -> None:
        """Redis refused ``view``'s write for lack of memory (``used``: its memory, when
        it could be read), or, with None, took it: the alert fires once and resolves
        once."""
        full = used is not None
        alert = Alert(
            "online_store_full", f"{view.name} v{view.version}", "redis", "used_memory_bytes",
            float(used.used) if used else 0.0, float(used.maxmemory) if used else 0.0,
            "the online write of a batch (the consumer waits and retries)", view.owner,
        )  # fmt: skip
        self._now(alert, full)

    def offline_full(self, where: str | None) -> None:
        """The offline store's filesystem had no space left for a batch (``where``: the
        error), or, with None, took one: the alert fires once and resolves once, to the
        contract's owner."""
        health = self.health
        alert = Alert(
            "offline_store_full", health.subject, "offline store", "no_space_left",
            1.0 if where else 0.0, 0.0,
            f"the offline write of a batch (the consumer waits and retries): {where or 'ok'}",
            health.owner,
        )  # fmt: skip
        self._now(alert, where is not None)

    def _now(self, alert: Alert, breached: bool) -> None:
        """An alert of the write path: out at once when it fires or resolves, not at the
        next check (the consumer may wait on it for long)."""
        if self.alerts.check(alert, breached) is not None:
            self.alerts.flush(1.0)

    def _refresh(self) -> None:
        """Watch the active version of each view that has a baseline."""
        if self.store is None:
            return
        states = Lifecycle(self.store.client, self.store.prefix).states()
        wanted: dict[tuple[str, int], Baseline] = {}
        for name in {n for n, _ in self.views}:
            active = states[name].active if name in states else None
            if active is None or (name, active) not in self.views:
                continue
            current = self.drifts.get((name, active))
            baseline = Baseline.load(self.store.client, self.store.prefix, name, active)
            if baseline is None:
                continue
            if current is not None and current.baseline.created == baseline.created:
                wanted[(name, active)] = current.baseline
                continue
            log.info("drift of %s v%d watched against its baseline of %d rows",
                     name, active, baseline.rows)  # fmt: skip
            self.drifts[(name, active)] = ViewDrift(self.views[(name, active)], baseline,
                                                    self.store, self.alerts,
                                                    self.settings.sample_entities)  # fmt: skip
            wanted[(name, active)] = baseline
        for gone in set(self.drifts) - set(wanted):
            del self.drifts[gone]


def watch_for(definition: Any, contract: Any, fields: list[str], kafka: dict[str, Any],
              store: RedisOnlineStore | None) -> Watch | None:  # fmt: skip
    """The watch a consumer definition asks for (None when monitoring is off)."""
    settings: Monitoring = definition.monitoring
    if not settings.enabled:
        return None
    source = f"consumer {definition.name}"
    state = None if store is None else (store.client, f"{store.prefix}:{{@alerts}}:{source}")
    alerts = Alerts(kafka, settings.alerts_topic, source=source, state=state)
    owner = contract.owner or "unowned (set featurestore.owner in the contract)"
    health = ContractHealth(definition.subject, owner, settings, alerts, fields=fields,
                            event_time=contract.event_time)  # fmt: skip
    return Watch(settings, alerts, health, list(definition.views), store)

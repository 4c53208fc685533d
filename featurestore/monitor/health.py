"""Contract health as one consumer sees it: violation rates, null rates, freshness, lag.

The consumer reports every committed batch (`observe`): events in, dead letters by
reason and by field:rule, and the nulls of each contract field among the valid rows.
Every check (`check`) compares, over the last ``monitoring.window``:

- the dead-lettered share of events with ``violation_rate``, and the share breaking
  each rule with ``rule_rate`` (once ``min_events`` events are in the window);
- the null share of each field with ``null_rate`` (or its ``null_rates`` entry);
- the age of the newest event seen with ``freshness``;
- the unread events of each assigned partition with ``lag``;

and fires or resolves alerts carrying the contract's owner (`featurestore.monitor.alerts`).
"""

from __future__ import annotations

import polars as pl

from featurestore.contracts.violations import Rejection
from featurestore.monitor.alerts import Alert, Alerts, Kind
from featurestore.monitor.config import Monitoring
from featurestore.monitor.rolling import RollingCounts

IN, DEAD = "__in", "__dead"


class ContractHealth:
    """Rolling violation and null rates of one consumer's contract, with alerts."""

    def __init__(self, subject: str, owner: str, settings: Monitoring, alerts: Alerts, *,
                 fields: list[str], event_time: str | None) -> None:  # fmt: skip
        self.subject, self.owner, self.settings, self.alerts = subject, owner, settings, alerts
        self.fields, self.event_time = fields, event_time
        self.counts = RollingCounts(settings.ms("window"))
        self.newest_event_ms: int | None = None

    def observe(
        self, consumed: int, rejections: list[Rejection], valid: pl.DataFrame, now_ms: int
    ) -> None:
        counts: dict[object, float] = {IN: consumed, DEAD: len(rejections)}
        for r in rejections:
            rule = f"{r.field}:{r.rule}" if r.field and r.rule else r.reason.value
            counts[("rule", rule)] = counts.get(("rule", rule), 0) + 1
        present = [f for f in self.fields if f in valid.columns]
        event_time = self.event_time
        if valid.height and present:
            nulls = valid.select(pl.col(present).null_count()).row(0)
            counts |= {("null", f): n for f, n in zip(present, nulls, strict=True)}
            counts[("valid",)] = valid.height
            if event_time and event_time in valid.columns:
                newest = valid.get_column(event_time).dt.epoch("ms").max()
                if newest is not None:
                    seen = int(newest)  # type: ignore[arg-type]
                    self.newest_event_ms = max(self.newest_event_ms or seen, seen)
        self.counts.add(counts, now_ms)

    def check(self, now_ms: int, lag: dict[str, int]) -> None:
        s, totals = self.settings, self.counts.totals(now_ms)
        consumed = totals.get(IN, [0.0])[0]
        window = f"last {s.window} ({int(consumed):,} events)"
        if consumed >= s.min_events:
            rate = totals.get(DEAD, [0.0])[0] / consumed
            self._check("violation_rate", "all rules", "violation_rate", rate,
                        s.violation_rate, window)  # fmt: skip
        rules = {str(k[1]) for k in totals if isinstance(k, tuple) and k[0] == "rule"}
        firing = {k[2] for k in self.alerts.firing if k[0] == "violation_rate"} - {"all rules"}
        for rule in sorted(rules | firing):  # a rule gone from the window resolves
            broken = totals.get(("rule", rule), [0.0])[0]
            if consumed >= s.min_events or rule in firing:
                rate = broken / consumed if consumed else 0.0
                self._check("violation_rate", rule, "violation_rate", rate, s.rule_rate, window)
        valid = totals.get(("valid",), [0.0])[0]
        for key, vector in totals.items():
            if isinstance(key, tuple) and key[0] == "null" and valid >= s.min_events:
                field = str(key[1])
                self._check("null_rate", field, "null_rate", vector[0] / valid,
                            s.null_rates.get(field, s.null_rate),
                            f"last {s.window} ({int(valid):,} valid events)")  # fmt: skip
        if self.newest_event_ms is not None:
            age = (now_ms - self.newest_event_ms) / 1000
            self._check("freshness", "newest event", "freshness_seconds", age,
                        s.ms("freshness") / 1000, "since the newest event consumed")  # fmt: skip
        for partition, unread in lag.items():
            self._check("lag", partition, "lag", float(unread), float(s.lag), "at this check")

    def _check(  # noqa: PLR0917 - private, one alert's fields
        self, kind: Kind, name: str, statistic: str, value: float, threshold: float, window: str
    ) -> None:
        alert = Alert(kind, self.subject, name, statistic, value, threshold, window, self.owner)
        self.alerts.check(alert, value > threshold)

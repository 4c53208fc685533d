"""Feature drift: a view version's training baseline, and its live distributions
against it.

Baseline (`featurestore monitor baseline`): the profile (`monitor.profile.Profile`) of
every feature of the version as of sampled event times in a past period, recomputed
offline with the one window engine, and of every input field the version reads, stored
as JSON in the version's meta hash (field ``baseline``). The contract's pii fields, and
features whose values are theirs, are profiled without their values (null rate only),
so neither the baseline, the live profiles nor the report ever hold one.

Live (`ViewDrift`, in the consumer): for each committed batch, the input fields of the
valid events, and the features of up to ``sample`` entities the batch touched read from
Redis right after the write (their values as a model scoring those events would see
them), are counted on the baseline's bins over the view's ``drift.window``. Every check
computes PSI and KS (numbers) or Jensen-Shannon (text) and the rise of the null rate,
fires or resolves drift alerts naming the view's owner, and stores the current
profiles and statistics in the meta hash (field ``drift``) for `monitor report`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import polars as pl

from featurestore.features.definitions import Feature, FeatureView
from featurestore.features.windows import duration_ms
from featurestore.monitor.alerts import Alert, Alerts
from featurestore.monitor.profile import Profile, js, ks, psi
from featurestore.monitor.rolling import RollingCounts
from featurestore.online.layout import meta_key
from featurestore.online.store import RedisOnlineStore

BASELINE, CURRENT = "baseline", "drift"


@dataclass(frozen=True)
class Baseline:
    view: str
    version: int
    start: int
    end: int
    rows: int
    created: int
    features: dict[str, Profile]
    inputs: dict[str, Profile]

    @classmethod
    def of(cls, view: FeatureView, features: pl.DataFrame, inputs: pl.DataFrame,
           start: int, end: int, *, pii: Collection[str]) -> Baseline:  # fmt: skip
        """Profiles of ``features`` (one column per feature) and ``inputs`` (one column
        per input field) over [start, end]. The ``pii`` fields of the contract, and the
        features whose values are theirs (`holds_values`), are profiled withheld."""
        return cls(
            view.name,
            view.version,
            start,
            end,
            features.height,
            int(time.time() * 1000),
            {f.name: _profile(features[f.name], holds_values(f, pii)) for f in view.features},
            {c: _profile(inputs[c], c in pii) for c in view.values},
        )

    def to_json(self) -> str:
        data = {**self.__dict__,
                "features": {k: p.to_dict() for k, p in self.features.items()},
                "inputs": {k: p.to_dict() for k, p in self.inputs.items()}}  # fmt: skip
        return json.dumps(data)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Baseline:
        data = json.loads(raw)
        data["features"] = {k: Profile.from_dict(p) for k, p in data["features"].items()}
        data["inputs"] = {k: Profile.from_dict(p) for k, p in data["inputs"].items()}
        return cls(**data)

    def save(self, client: Any, prefix: str) -> None:
        client.hset(meta_key(prefix, self.view, self.version), BASELINE, self.to_json())

    @classmethod
    def load(cls, client: Any, prefix: str, view: str, version: int) -> Baseline | None:
        raw = client.hget(meta_key(prefix, view, version), BASELINE)
        return None if raw is None else cls.from_json(raw)


def holds_values(feature: Feature, pii: Collection[str]) -> bool:
    """Whether ``feature``'s values are values of a pii field: last, min and max of one
    (count, sum, mean, std and distinct counts are not any one event's value)."""
    return feature.column in pii and feature.function in ("last", "min", "max")


def _profile(values: pl.Series, withheld: bool) -> Profile:
    return Profile.withheld(values) if withheld else Profile.baseline(values)


def statistics(base: Profile, current: Profile) -> dict[str, float]:
    """The drift statistics of one feature or field."""
    shape = {"psi": psi(base, current), "ks": ks(base, current)} if base.kind == "numeric" \
        else {"js": js(base, current)}  # fmt: skip
    return {**shape, "null_rate": current.null_rate - base.null_rate}


class ViewDrift:
    """One view version's live distributions against its baseline, with alerts."""

    def __init__(self, view: FeatureView, baseline: Baseline, store: RedisOnlineStore,
                 alerts: Alerts, sample: int) -> None:  # fmt: skip
        self.view, self.baseline, self.store, self.alerts = view, baseline, store, alerts
        self.sample = sample
        self.counts = RollingCounts(duration_ms(view.drift.window))
        self.join_keys = store.entities[view.entity]

    @property
    def subject(self) -> str:
        return f"{self.view.name} v{self.view.version}"

    def counted(self, valid: pl.DataFrame, now_ms: int) -> dict[Any, list[float]]:
        """A batch's counts on the baseline's bins (reads Redis; adds nothing yet)."""
        counts: dict[Any, list[float]] = {}
        if valid.is_empty():
            return counts
        for name, profile in self.baseline.inputs.items():
            if name in valid.columns:
                bins, nulls = profile.counts(valid.get_column(name))
                counts[("input", name)] = [*bins, float(nulls)]
        if self.sample and all(k in valid.columns for k in self.join_keys):
            entities = valid.select(self.join_keys).unique(maintain_order=True).head(self.sample)
            names = list(self.baseline.features)
            values = self.store.read(self.view, entities, now_ms, names)
            for name in names:
                bins, nulls = self.baseline.features[name].counts(values.get_column(name))
                counts[("feature", name)] = [*bins, float(nulls)]
        return counts

    def add(self, counts: dict[Any, list[float]], now_ms: int) -> None:
        self.counts.add(counts, now_ms)

    def check(self, now_ms: int) -> dict[str, Any]:
        """Statistics of the window against the baseline; alerts; what `report` shows."""
        totals, drift = self.counts.totals(now_ms), self.view.drift
        report: dict[str, Any] = {"at": now_ms, "window": drift.window, "profiles": {}}
        for (kind, name), base in self._profiles():
            vector = totals.get((kind, name))
            if vector is None:
                continue
            current = Profile.from_counts(base, vector[:-1], int(vector[-1]))
            label = name if kind == "feature" else f"input {name}"
            found = statistics(base, current)
            report["profiles"][label] = {"current": current.to_dict(), "stats": found,
                                         "count": current.count}  # fmt: skip
            if current.count < drift.min_count:
                continue
            window = f"last {drift.window} ({current.count:,} values)"
            for statistic, value in found.items():
                threshold = drift.threshold(name, statistic)
                alert = Alert("drift", self.subject, label, statistic, value, threshold, window,
                              self.view.owner)  # fmt: skip
                self.alerts.check(alert, value > threshold)
        key = meta_key(self.store.prefix, self.view.name, self.view.version)
        self.store.client.hset(key, CURRENT, json.dumps(report))
        return report

    def _profiles(self) -> list[tuple[tuple[str, str], Profile]]:
        return [*((("feature", n), p) for n, p in self.baseline.features.items()),
                *((("input", n), p) for n, p in self.baseline.inputs.items())]  # fmt: skip

"""Online/offline skew audit: what Redis serves against what the offline store
recomputes, for sampled live entities at one time.

Entities are sampled from the version's online keys; each is read online at ``at`` and
recomputed by `get_historical_features` as of ``at`` from the validated events. A
mismatch is a value that differs (floats beyond 1e-9 relative), which parity forbids:
its cause is a bug, an event written to one store and not the other, or a batch in
flight while the audit ran (audit a time a little in the past of the newest commit to
rule that out).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from featurestore.features.definitions import FeatureView
from featurestore.offline.history import get_historical_features
from featurestore.online.compare import sample_entities
from featurestore.online.store import RedisOnlineStore

TOLERANCE = 1e-9


@dataclass
class SkewReport:
    entities: int
    at: int
    mismatches: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.mismatches.values())


def audit_skew(
    store: RedisOnlineStore,
    view: FeatureView,
    *,
    join_keys: list[str],
    offline_root: str,
    event_time: str,
    at: int,
    sample: int = 200,
) -> SkewReport:
    entities = sample_entities(store, view, join_keys, sample)
    report = SkewReport(entities.height, at)
    if entities.is_empty():
        return report
    names = [f.name for f in view.features]
    online = store.read(view, entities, at, names)
    rows = entities.with_columns(pl.lit(at).alias("__at"))
    offline = get_historical_features(
        rows, [f"{view.name}:{n}" for n in names], views={view.name: view},
        join_keys={view.entity: join_keys}, offline_root=offline_root,
        timestamp_column="__at", event_time=event_time,
    )  # fmt: skip
    for name in names:
        a, b = online[name], offline[name]
        for i, (x, y) in enumerate(zip(a.to_list(), b.to_list(), strict=True)):
            if _differ(x, y):
                report.mismatches[name] = report.mismatches.get(name, 0) + 1
                if len(report.examples) < 20:
                    key = {k: entities[k][i] for k in join_keys}
                    report.examples.append({"entity": key, "feature": name, "online": x,
                                            "offline": y})  # fmt: skip
    return report


def _differ(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return abs(x - y) > TOLERANCE * max(abs(x), abs(y))
    return bool(x != y)

"""How two versions of a view differ on live entities: the shadow review before a
promotion.

Entities are sampled from version A's keys (SCAN, so Redis is never blocked), both
versions are read for them in one lookup at the same time, and every feature the two
versions share is compared: the share of entities whose values differ (floats beyond
1e-9 relative) and the distribution of the absolute differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from featurestore.features.definitions import FeatureView
from featurestore.online.layout import ENTITY_SEPARATOR, view_prefix
from featurestore.online.store import RedisOnlineStore

TOLERANCE = 1e-9


@dataclass(frozen=True)
class FeatureDifference:
    feature: str
    entities: int
    differ: int
    abs_diff: dict[str, float | None]  # p50, p90, p99, max over the entities that differ

    @property
    def share(self) -> float:
        return self.differ / self.entities if self.entities else 0.0


def sample_entities(
    store: RedisOnlineStore, view: FeatureView, join_keys: list[str], limit: int
) -> pl.DataFrame:
    """Up to ``limit`` entities that have online state in ``view``'s version."""
    prefix = view_prefix(store.prefix, view)
    entities: list[tuple[str, ...]] = []
    for key in store.client.scan_iter(match=f"{prefix}*", count=1000):
        entities.append(tuple(key.decode().removeprefix(prefix).split(ENTITY_SEPARATOR)))
        if len(entities) >= limit:
            break
    columns = {k: [e[i] for e in entities] for i, k in enumerate(join_keys)}
    return pl.DataFrame(columns, schema=dict.fromkeys(join_keys, pl.String))


def compare_versions(
    store: RedisOnlineStore, a: FeatureView, b: FeatureView, entities: pl.DataFrame, at: int
) -> list[FeatureDifference]:
    """Every feature ``a`` and ``b`` share, compared on ``entities`` at ``at``."""
    names = [f.name for f in a.features if f.name in {g.name for g in b.features}]
    if not names or entities.is_empty():
        return []
    left, right = store.read_many([(a, names), (b, names)], entities, at)
    out = []
    for name in names:
        pair = pl.DataFrame({"x": left[name], "y": right[name]})
        numeric = pair["x"].dtype.is_numeric() and pair["y"].dtype.is_numeric()
        x, y = (pl.col(c).cast(pl.Float64 if numeric else pl.String) for c in ("x", "y"))
        gap = (x - y).abs() if numeric else pl.lit(None, pl.Float64)
        unequal = (gap > TOLERANCE * pl.max_horizontal(x.abs(), y.abs())) if numeric else x != y
        differ = unequal.fill_null(False) | (x.is_null() != y.is_null())
        scored = pair.select(differ.alias("differ"), gap.alias("gap"))
        gaps = scored.filter("differ")["gap"].drop_nulls()
        quantiles: dict[str, float | None] = {
            "p50": gaps.quantile(0.5), "p90": gaps.quantile(0.9), "p99": gaps.quantile(0.99),
            "max": gaps.max(),  # type: ignore[dict-item]
        }  # fmt: skip
        out.append(FeatureDifference(name, pair.height, int(scored["differ"].sum()), quantiles))
    return out

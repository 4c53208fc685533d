"""Serving: the in-process feature client (sync and asyncio) and the HTTP feature server.

`FeatureClient.get_online_features(entities, features)` returns `OnlineFeatures`:
values with their view version, freshness and status per entity row, as dict, Polars,
Arrow or pandas (`to_df`, as Feast's). `featurestore serve` runs the same lookup behind HTTP
(`featurestore.serving.server`). `warm()` readies the compiled lookup at a service's
start-up, so that its first request does not pay for it.
"""

from featurestore.features.small import warm
from featurestore.serving.catalog import Catalog, Resolved
from featurestore.serving.client import AsyncFeatureClient, FeatureClient, entity_frame
from featurestore.serving.response import (
    EXPIRED,
    NOT_FOUND,
    NULL_VALUE,
    OUTSIDE_MAX_AGE,
    PRESENT,
    OnlineFeatures,
)

__all__ = [
    "EXPIRED",
    "NOT_FOUND",
    "NULL_VALUE",
    "OUTSIDE_MAX_AGE",
    "PRESENT",
    "AsyncFeatureClient",
    "Catalog",
    "FeatureClient",
    "OnlineFeatures",
    "Resolved",
    "entity_frame",
    "warm",
]

"""Serving: the in-process feature client (sync and asyncio) and the HTTP feature server.

`FeatureClient.get_online_features(entities, features)` returns `OnlineFeatures`:
values with their view version, freshness and status per entity row, as dict, Polars,
Arrow or pandas. `featurestore serve` runs the same lookup behind HTTP
(`featurestore.serving.server`).
"""

from featurestore.serving.catalog import Catalog, Resolved
from featurestore.serving.client import AsyncFeatureClient, FeatureClient, entity_frame
from featurestore.serving.response import EXPIRED, NOT_FOUND, PRESENT, OnlineFeatures

__all__ = [
    "EXPIRED",
    "NOT_FOUND",
    "PRESENT",
    "AsyncFeatureClient",
    "Catalog",
    "FeatureClient",
    "OnlineFeatures",
    "Resolved",
    "entity_frame",
]

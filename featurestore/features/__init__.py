"""Features: windows over event time and the one engine that computes their values.

`windows` defines tiles and the window at t (event times in [floor_g(t) - W + g, t]);
`aggregates` builds mergeable per-(entity, tile) partials and reads window values from
them online (`window_values`) and offline (`as_of`).
"""

from featurestore.features.aggregates import (
    AGGREGATIONS,
    TILE,
    Aggregation,
    Value,
    feature_column,
    merge_partials,
    partial_column,
    tile_partials,
    value_names,
    window_values,
)
from featurestore.features.point_in_time import as_of
from featurestore.features.reads import WindowRead, windows_at
from featurestore.features.windows import Window, duration_ms, floor_to_tile, tile_index

__all__ = [
    "AGGREGATIONS",
    "TILE",
    "Aggregation",
    "Value",
    "Window",
    "WindowRead",
    "as_of",
    "duration_ms",
    "feature_column",
    "floor_to_tile",
    "merge_partials",
    "partial_column",
    "tile_index",
    "tile_partials",
    "value_names",
    "window_values",
    "windows_at",
]

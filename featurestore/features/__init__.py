"""Features: windows over event time, and one window semantics with two executions.

`windows` defines tiles and the window at t (event times in [floor_g(t) - W + g, t]);
`spec` defines every aggregation once (partial parts, merge laws, finishing);
`aggregates` runs them in Polars: mergeable per-(entity, tile) partials, window values
of many rows (`window_values`) and point-in-time rows (`as_of`); `small` runs them on
numpy arrays for online lookups of a few entities, with no Polars frame.
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
from featurestore.features.windows import Window, duration_ms, floor_to_tile, tile_index

__all__ = [
    "AGGREGATIONS",
    "TILE",
    "Aggregation",
    "Value",
    "Window",
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
]

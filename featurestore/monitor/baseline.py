"""A view version's training baseline, built from the offline store.

Rows are sampled from the validated events of the view's source in [start, end]: each
sampled event gives (its entity, its event time), and `get_historical_features`
recomputes every feature as of that time with the one window engine, which is what a
model trained on that period saw. The same events give the input fields' profiles. The
contract's pii fields (and features whose values are theirs) keep no values: see
`Profile.withheld`.
"""

from __future__ import annotations

from collections.abc import Collection

import polars as pl

from featurestore.errors import ConfigError
from featurestore.features.definitions import FeatureView
from featurestore.monitor.drift import Baseline
from featurestore.offline.events import scan_events
from featurestore.offline.history import get_historical_features

TIME = "__event_timestamp"


def build_baseline(
    view: FeatureView,
    *,
    join_keys: list[str],
    offline_root: str,
    event_time: str,
    start: int,
    end: int,
    pii: Collection[str],
    sample: int = 20_000,
    seed: int = 0,
) -> Baseline:
    """Profiles of ``view``'s features and inputs over [start, end] (epoch ms); ``pii``
    names the source contract's pii fields (`Contract.pii_fields`), profiled withheld."""
    columns = [*join_keys, event_time, *view.values]
    events = scan_events(offline_root, view.source, columns=columns, event_time=event_time,
                         between=(start, end)).collect()  # fmt: skip
    if events.is_empty():
        raise ConfigError(
            f"no offline events of {view.source} between the given times; pick a period "
            "the consumer has written (see `featurestore history` for the same data)"
        )
    rows = events.sample(min(sample, events.height), seed=seed)
    entity_df = rows.select(*join_keys, pl.col(event_time).alias(TIME))
    refs = [f"{view.name}:{f.name}" for f in view.features]
    features = get_historical_features(
        entity_df, refs, views={view.name: view}, join_keys={view.entity: join_keys},
        offline_root=offline_root, timestamp_column=TIME, event_time=event_time,
    )  # fmt: skip
    return Baseline.of(view, features, rows, start, end, pii=pii)

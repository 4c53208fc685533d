"""Feast's side of the peer comparison; runs in bench/peers/.venvs/feast.

    python feast_side.py PART SPEC_JSON

Parts (results as marked JSON lines, see protocol.py):
  setup    a feature repo in a folder: feature_store.yaml (provider local, file registry,
           the file offline store, i.e. Dask, and the given online store), entity `card`
           (join key card_id) and one FeatureView per Parquet file ours_side.py wrote (the
           same 5 views x 10 features, ttl 7 days); `apply`, then, with --materialize, load
           the online store from the files (`materialize`)
  online   a lookup worker: "sdk" times get_online_features(...).to_dict() over the lookup
           sets for some seconds, "values" answers for some cards
  pit      one get_historical_features(entity_df, ...).to_df() case: seconds and peak RSS

The HTTP server is Feast's own `feast -c REPO serve`, which run.py starts.
"""

from __future__ import annotations

import gc
import json
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Bool, Float64, Int64, String
from protocol import commands, emit, memory_mb, spec

TYPES = {"Int64": Int64, "Float64": Float64, "String": String, "Bool": Bool}
YAML = """project: {project}
registry: {repo}/registry.db
provider: local
online_store:
{online}
offline_store:
  type: file
entity_key_serialization_version: 3
"""


def setup(s: dict[str, Any]) -> None:
    repo, started = Path(s["repo"]), time.perf_counter()
    repo.mkdir(parents=True, exist_ok=True)
    if s.get("redis"):
        online = f'  type: redis\n  connection_string: "{s["redis"]}"'
    else:
        online = f"  type: sqlite\n  path: {repo}/online.db"
    (repo / "feature_store.yaml").write_text(YAML.format(project=s["project"], repo=repo,
                                                         online=online))  # fmt: skip
    card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.STRING)
    views = []
    for name, features in s["types"].items():
        source = FileSource(name=f"{name}_source", path=str(Path(s["tables"]) / f"{name}.parquet"),
                            timestamp_field="event_timestamp")  # fmt: skip
        schema = [Field(name=f, dtype=TYPES[t]) for f, t in features.items()]
        views.append(FeatureView(name=name, entities=[card], ttl=timedelta(days=7),
                                 schema=schema, source=source, online=True))  # fmt: skip
    store = FeatureStore(repo_path=str(repo))
    store.apply([card, *views])
    applied = time.perf_counter() - started
    materialized = None
    if s.get("materialize_at_ms") is not None:
        at = datetime.fromtimestamp(int(s["materialize_at_ms"]) / 1000, UTC)
        began = time.perf_counter()
        store.materialize(at - timedelta(days=1), at + timedelta(seconds=1))
        materialized = round(time.perf_counter() - began, 2)
    emit("ready", apply_s=round(applied, 2), materialize_s=materialized,
         wall_s=round(time.perf_counter() - started, 2))  # fmt: skip


def online(s: dict[str, Any]) -> None:
    store = FeatureStore(repo_path=s["repo"])
    refs = list(s["refs"])
    sets = {int(k): v for k, v in json.loads(Path(s["sets"]).read_text()).items()}

    def lookup(cards: list[str]) -> dict[str, Any]:
        rows = [{"card_id": c} for c in cards]
        answer = store.get_online_features(features=refs, entity_rows=rows,
                                           full_feature_names=True)  # fmt: skip
        return dict(answer.to_dict())

    for _ in range(3):  # warm: connection, registry, first calls
        for cards in sets.values():
            lookup(cards[0])
    gc.freeze()  # as a long-lived service does after start-up (both sides: bench/peers/README.md)
    emit("ready", memory_mb=memory_mb())
    for command in commands():
        op = command["op"]
        if op == "sdk":
            pool, samples = sets[int(command["size"])], []
            i, clock = int(command.get("first", 0)), time.perf_counter
            end = clock() + float(command["seconds"])
            while clock() < end:
                cards, i = pool[i % len(pool)], i + 1
                began = clock()
                lookup(cards)
                samples.append((clock() - began) * 1000)
            emit("samples", ms=samples)
        elif op == "values":
            emit("values", columns=lookup(command["cards"]))
        elif op == "stop":
            break


def pit(s: dict[str, Any]) -> None:
    rows = pd.read_parquet(s["rows"])
    store = FeatureStore(repo_path=s["repo"])
    refs = list(s["refs"])
    before = memory_mb()
    started = time.perf_counter()
    job = store.get_historical_features(entity_df=rows, features=refs, full_feature_names=True)
    out = job.to_df()
    seconds = time.perf_counter() - started
    after = memory_mb()
    if s.get("out"):
        out.to_parquet(s["out"])
    emit("result", seconds=round(seconds, 3), rows_in=len(rows), rows_out=len(out),
         columns=len(out.columns), rss_before_mb=before["VmRSS"],
         peak_rss_mb=after["VmHWM"])  # fmt: skip


PARTS = {"setup": setup, "online": online, "pit": pit}


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    part = sys.argv[1] if len(sys.argv) > 1 else ""
    if part not in PARTS:
        print(__doc__, file=sys.stderr)
        return 2
    PARTS[part](spec())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Our side of the peer comparison; runs in the repo's virtualenv (.venv), in a child process
of run.py like each peer's side, so each side has a process (and a peak RSS) of its own.

    .venv/bin/python bench/peers/ours_side.py PART SPEC_JSON

Parts (results as marked JSON lines, see protocol.py):
  ingest        ConsumerRuntime over the bench topic from the start (a fresh group): decode and
                validate against the contract, one view (count, sum, mean of amount per card
                over a sliding 1h) applied to Redis, optionally the Parquet sink too;
                "caught_up" after N events, then runs on (freshness probes) until "stop"
  online-load   bench/online.py's payment history of the cards applied to Redis (the 5 views
                x 10 features of bench/card_views.py); the 50 values each card has at the
                end of the history, per view, as Parquet for Feast; the lookup sets
  online        a lookup worker: "sdk" times FeatureClient.get_online_features(...).to_dict()
                (as Feast's side times its own) over the lookup sets for some seconds,
                "values" answers at a fixed time
  pit-prepare   bench/offline.py's payment history as Parquet events (EventWriter); a
                feature table per view for Feast (our 10 values of the view at every event,
                one row per card and event time); the entity rows (random cards at random
                times, and cards at their own event times)
  pit           one get_historical_features case: seconds and peak RSS
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import polars as pl
from protocol import commands, emit, memory_mb, spec

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))  # bench/: card_views, online, offline, machine

import card_views  # noqa: E402
import offline as offline_bench  # noqa: E402
import online as online_bench  # noqa: E402

from featurestore.contracts.registry.client import RegistryClient  # noqa: E402
from featurestore.features.definitions import Entity, FeatureView  # noqa: E402
from featurestore.offline import EventWriter  # noqa: E402
from featurestore.offline.history import get_historical_features  # noqa: E402
from featurestore.online import RedisOnlineStore, connect  # noqa: E402
from featurestore.serving import Catalog, FeatureClient  # noqa: E402
from featurestore.stream import ConsumerDefinition, ConsumerRuntime  # noqa: E402
from featurestore.stream.definition import OnlineSink, Sinks  # noqa: E402

JOIN_KEYS = {"card": ["card_id"]}
INGEST_VIEW = "card_spend_1h"
PIT_SUBJECT = offline_bench.SUBJECT
FEAST_TYPES = {pl.Int64: "Int64", pl.Float64: "Float64", pl.String: "String", pl.Boolean: "Bool"}


# --- ingest -------------------------------------------------------------------------------


def ingest_view(subject: str) -> FeatureView:
    """count, sum and mean of amount per card over a sliding hour (1-minute tiles)."""
    return FeatureView.model_validate(
        {"name": INGEST_VIEW, "source": subject, "entity": "card", "owner": "bench@example.com",
         "aggregations": [{"column": "amount", "functions": ["count", "sum", "mean"],
                           "windows": ["1h"]}]}
    )  # fmt: skip


def ingest(s: dict[str, Any]) -> None:
    label, n, subject = s["label"], int(s["n"]), s["subject"]
    definition = ConsumerDefinition(
        name=f"peers-{label}", topics=[s["topic"]], subject=subject,
        batch_size=int(s["batch_size"]), batch_wait_ms=int(s["batch_wait_ms"]),
        group=f"peers-{label}-{uuid.uuid4().hex[:8]}", dlq_topic=f"{s['topic']}.dlq.{label}",
        entities=[Entity(name="card", join_keys=["card_id"])], views=[ingest_view(subject)],
        sinks=Sinks(online=OnlineSink(prefix=s["prefix"])),
    )  # fmt: skip
    registry = RegistryClient(s["registry_url"])
    redis = connect(s["redis_url"], check=True)
    store = RedisOnlineStore(redis, definition.join_keys, prefix=s["prefix"])
    with tempfile.TemporaryDirectory(prefix="peers-ours-parquet-") as parquet:
        runtime = ConsumerRuntime(definition, {"bootstrap.servers": s["bootstrap"]}, registry,
                                  parquet if s["parquet"] else None, online=store)  # fmt: skip
        ends: list[tuple[float, int]] = []  # (end of a batch, its records)
        process = runtime.process

        def timed(records: list[Any]) -> None:
            process(records)
            ends.append((time.perf_counter(), len(records)))

        runtime.process = timed  # type: ignore[method-assign]
        stop, done = threading.Event(), threading.Event()
        deadline = time.monotonic() + float(s["deadline_s"])

        def listen() -> None:
            for command in commands():
                if command.get("op") == "stop":
                    break
            stop.set()
            runtime.stop()

        def until(stats: Any) -> bool:
            late = time.monotonic() > deadline
            if not done.is_set() and (stats.events_in >= n or late):
                done.set()
                end = ends[-1][0] if ends else time.perf_counter()
                first_end, first_n = ends[0] if ends else (end, 0)
                emit("caught_up", complete=stats.events_in >= n, events=stats.events_in,
                     valid=stats.valid, dead_lettered=dict(stats.dead_lettered),
                     wall_s=round(end - started, 3), first_s=round(first_end - started, 3),
                     batches=len(ends),
                     events_per_s=round(stats.events_in / max(end - started, 1e-9)),
                     steady_events_per_s=round((stats.events_in - first_n)
                                               / max(end - first_end, 1e-9)),
                     memory_mb=memory_mb())  # fmt: skip
            return stop.is_set()

        threading.Thread(target=listen, daemon=True).start()
        started = time.perf_counter()
        stats = runtime.run(until)
        emit("stopped", events=stats.events_in, wall_s=round(time.perf_counter() - started, 3),
             memory_mb=memory_mb())  # fmt: skip
    registry.close()
    redis.close()


# --- online -------------------------------------------------------------------------------


def online_views() -> list[FeatureView]:
    return online_bench.views()


def refs_of(views: list[FeatureView]) -> list[str]:
    return [f"{v.name}:{f.name}" for v in views for f in v.features]


def client_for(url: str, prefix: str, clock: Any = None) -> FeatureClient:
    catalog = Catalog(online_views(), JOIN_KEYS, prefix=prefix)
    store = RedisOnlineStore(connect(url, socket_timeout=10), JOIN_KEYS, prefix)
    return FeatureClient(catalog, store, clock=clock) if clock else FeatureClient(catalog, store)


def values_at(client: FeatureClient, cards: list[str], refs: list[str]) -> pl.DataFrame:
    """card_id + every ref's value (named view__feature), integers as Int64."""
    got = client.get_online_features({"card_id": cards}, refs, full_feature_names=True)
    frame = pl.concat([got.entities, got.values], how="horizontal")
    return frame.with_columns(pl.col(pl.Int8, pl.Int16, pl.Int32, pl.UInt8, pl.UInt16, pl.UInt32,
                                     pl.UInt64).cast(pl.Int64),
                              pl.col(pl.Float32).cast(pl.Float64))  # fmt: skip


def per_view_parquet(frame: pl.DataFrame, views: list[FeatureView], out: Path,
                     time_column: pl.Expr) -> dict[str, dict[str, str]]:  # fmt: skip
    """One Parquet per view (card_id, event_timestamp, its features under their plain
    names) for Feast's FileSource; returns {view: {feature: Feast type}}."""
    out.mkdir(parents=True, exist_ok=True)
    types: dict[str, dict[str, str]] = {}
    for view in views:
        columns = [pl.col(f"{view.name}__{f.name}").alias(f.name) for f in view.features]
        part = frame.select("card_id", time_column.alias("event_timestamp"), *columns)
        part.write_parquet(out / f"{view.name}.parquet")
        types[view.name] = {f.name: FEAST_TYPES.get(part.schema[f.name], "String")
                            for f in view.features}  # fmt: skip
    return types


def online_load(s: dict[str, Any]) -> None:
    started = time.perf_counter()
    past = online_bench.history(int(s["cards"]), float(s["days"]))
    views = online_views()
    redis = connect(s["redis_url"], check=True)
    store = RedisOnlineStore(redis, JOIN_KEYS, prefix=s["prefix"])
    for view in views:
        store.register(view, {c for c in view.values if not past.events[c].dtype.is_numeric()})
    loaded = online_bench.load(store, views, past, int(s["batch_minutes"]) * 60_000)
    at_ms = past.end_ms
    client = client_for(s["redis_url"], s["prefix"], clock=lambda: at_ms)
    refs, began = refs_of(views), time.perf_counter()
    frames = [values_at(client, past.cards[i : i + 500], refs)
              for i in range(0, len(past.cards), 500)]  # fmt: skip
    values = pl.concat(frames)
    read_s = time.perf_counter() - began
    at = pl.lit(at_ms).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
    types = per_view_parquet(values, views, Path(s["out"]) / "feast", at)
    sets = {str(size): [f["card_id"].to_list()
                        for f in online_bench.lookup_sets(past, n, size, 11 + size)]
            for size, n in ((int(k), v) for k, v in s["pools"].items())}  # fmt: skip
    (Path(s["out"]) / "sets.json").write_text(json.dumps(sets))
    emit("loaded", events=past.events.height, cards=len(past.cards), load=loaded, at_ms=at_ms,
         values_read_s=round(read_s, 2), features=len(refs), types=types, refs=refs,
         wall_s=round(time.perf_counter() - started, 1))  # fmt: skip
    client.close()
    redis.close()


def online_worker(s: dict[str, Any]) -> None:
    client = client_for(s["redis_url"], s["prefix"])
    refs = refs_of(online_views())
    sets = {int(k): v for k, v in json.loads(Path(s["sets"]).read_text()).items()}
    for _ in range(3):  # warm: connection, scripts, Polars' first calls
        for cards in sets.values():
            client.get_online_features({"card_id": cards[0]}, refs, full_feature_names=True)
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
                # .to_dict(), as Feast's side times it: the answer as Python values.
                client.get_online_features({"card_id": cards}, refs,
                                           full_feature_names=True).to_dict()  # fmt: skip
                samples.append((clock() - began) * 1000)
            emit("samples", ms=samples)
        elif op == "values":
            at_ms = int(command["at_ms"])
            fixed = client_for(s["redis_url"], s["prefix"], clock=lambda at=at_ms: at)
            frame = values_at(fixed, command["cards"], refs)
            fixed.close()
            emit("values", columns=frame.to_dict(as_series=False))
        elif op == "stop":
            break
    client.close()


# --- point in time ------------------------------------------------------------------------


def pit_views() -> dict[str, FeatureView]:
    return {v.name: v for v in card_views.views(PIT_SUBJECT)}


def pit_prepare(s: dict[str, Any]) -> None:
    root, started = Path(s["root"]), time.perf_counter()
    events = offline_bench.history(int(s["cards"]), float(s["days"]), float(s["per_day"]))
    made_s = time.perf_counter() - started
    writer = EventWriter(str(root / "events"), PIT_SUBJECT, "ts")
    for part in events.iter_slices(100_000):
        writer.write(part)
    written_s = time.perf_counter() - started - made_s
    ms = pl.col("ts").dt.epoch("ms")
    span = events.select(ms.min().alias("lo"), ms.max().alias("hi"))
    lo, hi = span.row(0)
    # The entity rows: random cards at random times; cards at their own event times.
    at = "event_timestamp"
    rows = {
        "small": offline_bench.entity_rows(int(s["small"]), int(s["cards"]), (lo, hi), 11),
        "large": offline_bench.entity_rows(int(s["large"]), int(s["cards"]), (lo, hi), 12),
        "medium": offline_bench.entity_rows(int(s["medium"]), int(s["cards"]), (lo, hi), 14),
    }
    exact = (
        events.select("card_id", pl.col("ts").alias(at))
        .unique()
        .sample(min(int(s["exact"]), events.height), seed=13)
    )
    rows["exact"] = exact.with_columns(pl.int_range(pl.len()).alias("label"))
    for name, frame in rows.items():
        frame.write_parquet(root / f"rows_{name}.parquet")
    # Feast's feature table: our 50 values at every (card, event time), per view.
    table_rows = events.select("card_id", pl.col("ts").alias(at)).unique()
    views = pit_views()
    refs = refs_of(list(views.values()))
    began = time.perf_counter()
    table = get_historical_features(table_rows, refs, views=views, join_keys=JOIN_KEYS,
                                    offline_root=str(root / "events"), timestamp_column=at,
                                    full_feature_names=True)  # fmt: skip
    table_s = time.perf_counter() - began
    table = table.with_columns(pl.col(pl.Int8, pl.Int16, pl.Int32, pl.UInt8, pl.UInt16, pl.UInt32,
                                      pl.UInt64).cast(pl.Int64))  # fmt: skip
    types = per_view_parquet(table, list(views.values()), root / "feast", pl.col(at))
    disk = sum(f.stat().st_size for f in (root / "events").rglob("*.parquet"))
    feast_disk = sum(f.stat().st_size for f in (root / "feast").glob("*.parquet"))
    emit("prepared", events=events.height, cards=int(s["cards"]), days=float(s["days"]),
         span_ms=[lo, hi], events_mb_on_disk=round(disk / 2**20, 1),
         feature_table_rows=table.height, feature_table_mb_on_disk=round(feast_disk / 2**20, 1),
         made_s=round(made_s, 1), written_s=round(written_s, 1),
         feature_table_s=round(table_s, 1), types=types, refs=refs,
         rows={k: v.height for k, v in rows.items()},
         wall_s=round(time.perf_counter() - started, 1))  # fmt: skip


def pit(s: dict[str, Any]) -> None:
    rows = pl.read_parquet(s["rows"])
    views = pit_views()
    refs = refs_of(list(views.values()))
    before = memory_mb()
    started = time.perf_counter()
    out = get_historical_features(rows, refs, views=views, join_keys=JOIN_KEYS,
                                  offline_root=str(Path(s["root"]) / "events"),
                                  timestamp_column="event_timestamp", full_feature_names=True,
                                  chunk_rows=int(s.get("chunk_rows", 200_000)))  # fmt: skip
    seconds = time.perf_counter() - started
    after = memory_mb()
    if s.get("out"):
        out.write_parquet(s["out"])
    emit("result", seconds=round(seconds, 3), rows_in=rows.height, rows_out=out.height,
         columns=out.width, rss_before_mb=before["VmRSS"], peak_rss_mb=after["VmHWM"])  # fmt: skip


PARTS = {"ingest": ingest, "online-load": online_load, "online": online_worker,
         "pit-prepare": pit_prepare, "pit": pit}  # fmt: skip


def main() -> int:
    part = sys.argv[1] if len(sys.argv) > 1 else ""
    if part not in PARTS:
        print(__doc__, file=sys.stderr)
        return 2
    PARTS[part](spec())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

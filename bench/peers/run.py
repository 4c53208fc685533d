"""Our feature store side by side with Feast and Quix Streams: same machine, same Kafka broker,
same Redis, same features, one run; ratios against targets.

    .venv/bin/python bench/peers/run.py [--quick] [--only ingest,online,pit]

setup: each peer in its own virtualenv, pinned (bench/peers/setup_venvs.py: .venvs/feast from
requirements-feast.txt, .venvs/quix from requirements-quix.txt; made when missing or when
the file changed; a failed install is recorded and that peer's parts are skipped). One Kafka
(KRaft) and one redis-server from a LocalStack in a temporary home, and the registry in this
process, shared by every part. Each side runs as a child process (ours in .venv, the peers
in theirs) printing JSON results (protocol.py), so each has its own process and peak RSS.

ingest      One topic (4 partitions) of Confluent-framed Avro card payments
            (schemas/card_payment.v1.avsc, bench/ingest.py's PaymentStream over the last
            hour, no bad events, cards drawn with --skew), read from the start by each
            consumer in turn with a fresh group. Features: count, sum and mean of amount
            per card over 1h.
              floor           a bare confluent-kafka consume loop, no decoding
              ours            ConsumerRuntime: decode and validate, the view (sliding 1h of
                              1-minute tiles) to Redis, offsets committed per batch
              ours+parquet    the same plus the Parquet sink (as shipped)
              quix sliding    Quix Streams: Avro via the registry, sliding_window(1h)
                              .agg(count, sum, mean).current() to Redis (Quix's RedisSink,
                              flushed at each checkpoint; commit_interval and the poll
                              timeout = our batch wait)
              quix tumbling   tumbling_window(1h).final(), no sink (Quix's cheapest window)
            events/s to completion: N / (from starting the consumer to the batch, or message,
            that completes N); steady: after the first batch or message. Freshness, after
            catching up, with the consumer idle: a payment of a new card produced, then Redis
            polled (EXISTS, every ~2 ms) until its feature is there; p50 / p99 / max over
            --probes. Check: for 200 cards, Quix's last window [start, end] and our view read
            at `end` against the produced events (each with its own window rule).
online      bench/online.py's payment history of --online-cards cards applied to Redis by our
            store (5 views x 10 features, bench/card_views.py). Feast gets the 50 values our
            store serves for each card at the end of the history (Parquet per view,
            `feast materialize` into the same Redis; Feast stores values, it does not slide
            windows at read time). Interleaved rounds, each kind --seconds per round in a
            shuffled order, at 1, 10 and 100 entities (cards drawn in proportion to payments):
              floor       one pipeline of HGETALL of Feast's entity hashes (50 values each)
              ours sdk    FeatureClient.get_online_features, in a worker process
              feast sdk   FeatureStore.get_online_features(...).to_dict(), in a worker process
              ours http   our server (bench/serving.py's uvicorn app, 1 worker)
              feast http  `feast serve` (gunicorn + uvicorn worker, 1 worker,
                          --max-requests 0: no worker restart every 1000 requests)
            HTTP from this process: one keep-alive connection, requests back to back. Check:
            ours (at the end of the history), Feast's SDK and Feast's server agree on all 50
            values of 100 cards.
pit         bench/offline.py's payment history (--pit-cards, --pit-days) as Parquet events
            (EventWriter). Ours: get_historical_features computes the 50 windowed features
            from the raw events at each row's time. Feast: get_historical_features(...).to_df()
            with the file offline store (Dask), an as-of join of a precomputed feature table:
            our 50 values at every (card, event time), per view (ttl 7 days). Entity rows:
            random cards at random times within the history (--pit-small, --pit-medium,
            --pit-large), and
            --pit-small cards at their own event times. Each case in a fresh child process:
            wall time, peak RSS (VmHWM); killed past --max-seconds or --max-rss-gb. Check:
            values per feature where both return the row (exact event times: should all
            agree; random times: windows that slid past the card's last event differ).

Targets (ratios from this run): ingest >= 10x Quix Streams; online p99 >= 5x lower than
Feast's SDK and its server; point-in-time >= 10x faster than Feast's. Results:
bench/results/peers.json, peers.md, peers.png. The machine is shared and noisy: compare
ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

import polars as pl
import report as reporting
import setup_venvs
from protocol import memory_mb, quantiles
from sides import Http, Side, SideError, compare_columns, error_of, free_port, same, server

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path.insert(0, str(BENCH))  # bench/: machine, ingest, serving, online, offline

import ingest as ingest_bench  # noqa: E402
import ours_side  # noqa: E402
import serving as serving_bench  # noqa: E402
from confluent_kafka import Producer, libversion  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from machine import describe  # noqa: E402

from featurestore.contracts.registry.client import RegistryClient  # noqa: E402
from featurestore.local import LocalStack  # noqa: E402
from featurestore.online import RedisOnlineStore, connect  # noqa: E402
from featurestore.online.layout import view_prefix  # noqa: E402
from featurestore.settings import Settings  # noqa: E402

RESULTS = BENCH / "results" / "peers.json"
LOGS = HERE / ".logs"  # the latest run's logs of every side (ignored by git)
PARTS = ("ingest", "online", "pit")
SIZES, KINDS = reporting.SIZES, reporting.KINDS
POOLS = {1: 2_000, 10: 500, 100: 200}  # distinct lookup sets per size
FEAST_PROJECT = {"online": "peers_online", "pit": "peers_pit"}
SIDES = {"ours": (Path(sys.executable), "ours_side.py"),
         "feast": (setup_venvs.python_of("feast"), "feast_side.py"),
         "quix": (setup_venvs.python_of("quix"), "quix_side.py")}  # fmt: skip


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Run:
    """What every part needs: the options, the shared services, the peers, the folders."""

    args: argparse.Namespace
    kafka: str
    redis_url: str
    peers: dict[str, Any]
    work: Path
    logs: Path

    def side(self, label: str, who: str, part: str, spec: dict[str, Any]) -> Side:
        python, script = SIDES[who]
        return Side(label, [str(python), str(HERE / script), part, json.dumps(spec)], self.logs)

    def ok(self, who: str) -> bool:
        return who == "ours" or bool(self.peers[who]["ok"])

    @property
    def redis_host_port(self) -> tuple[str, int]:
        parsed = urlparse(self.redis_url)
        return parsed.hostname or "127.0.0.1", parsed.port or 6379


@contextmanager
def services(home: Path) -> Iterator[tuple[str, str]]:
    """(Kafka bootstrap, Redis URL) of a LocalStack in ``home``, stopped at the end."""
    settings = Settings()
    stack = LocalStack(home, settings.cache_dir, settings.kafka_version)
    try:
        up = stack.up(services=["kafka", "redis"], say=lambda m: say(f"  {m}"))
        assert up.kafka is not None
        assert up.redis is not None
        yield up.kafka, up.redis
    finally:
        stack.down()


# --- ingest -------------------------------------------------------------------------------


class Payments(ingest_bench.PaymentStream):
    """bench/ingest.py's payments with the card drawn as int(cards * r ** skew), r uniform:
    its own r ** 3 puts ~2% of all payments on one card (20,000 an hour in 1M events), and
    a sliding window that updates every window an event falls in (Quix's) pays for that one
    card quadratically; with 1.5 the busiest card makes a few hundred payments an hour."""

    def __init__(self, n: int, cards: int, schema_id: int, skew: float) -> None:
        super().__init__(n, cards, schema_id)
        self.skew = skew

    def event(self, i: int) -> dict[str, Any]:
        event = super().event(i)
        event["card_id"] = f"card_{int(self.cards * self.rng.random() ** self.skew):06d}"
        return event


def produce(bootstrap: str, topic: str, stream: Payments) -> pl.DataFrame:
    """The stream, keyed by card; returns (card_id, ts, amount) of every event."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "queue.buffering.max.messages": 500_000})  # fmt: skip
    cards, stamps, amounts = [], [], []
    for i in range(stream.n):
        event = stream.event(i)
        cards.append(event["card_id"])
        stamps.append(event["ts"])
        amounts.append(event["amount"])
        value = stream.encode(event)
        while True:
            try:
                producer.produce(topic, value, event["card_id"].encode())
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 9_999:
            producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("the producer could not deliver every event in 120 s")
    return pl.DataFrame({"card_id": cards, "ts": stamps, "amount": amounts})


class Probes:
    """Freshness: one payment of a new card, then Redis polled until its feature is there."""

    def __init__(self, bootstrap: str, topic: str, stream: Payments, redis: Any) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self.topic, self.stream, self.redis = topic, stream, redis
        self.next_card = 990_000  # above every card of the stream

    def one(self, key_of: Callable[[str], str], timeout: float) -> float | None:
        """ms from produce to visible, or None (not within ``timeout``)."""
        card = f"card_{self.next_card:06d}"
        self.next_card += 1
        key, started = key_of(card), time.time()
        event = {**self.stream.event(0), "card_id": card, "amount": 1.0,
                 "ts": int(started * 1000)}  # fmt: skip
        self.producer.produce(self.topic, self.stream.encode(event), card.encode())
        self.producer.flush(10)
        while time.time() - started < timeout:
            if self.redis.exists(key):
                return (time.time() - started) * 1000
            time.sleep(0.002)
        return None

    def run(self, key_of: Callable[[str], str], n: int) -> dict[str, Any]:
        warm = self.one(key_of, 60)  # the consumer is live (not counted)
        if warm is None:
            return {"error": "a warm-up probe was not visible within 60 s"}
        rng, samples, lost = random.Random(5), [], 0
        for _ in range(n):
            time.sleep(rng.uniform(0.05, 0.6))  # not in step with any batch or checkpoint
            got = self.one(key_of, 30)
            if got is None:
                lost += 1
            else:
                samples.append(got)
        return {**quantiles(samples), "lost": lost, "warmup_ms": round(warm, 1)}


def ours_key(prefix: str, view: Any, card: str) -> str:
    return view_prefix(prefix, view) + card


def quix_key(prefix: str, card: str) -> str:
    return f"{prefix}:{card}"


def consume(run: Run, label: str, who: str, spec: dict[str, Any], *, probes: Probes,
            key_of: Callable[[str], str] | None) -> dict[str, Any]:  # fmt: skip
    """One consumer over the whole topic, then freshness probes, then stopped."""
    say(f"ingest: {label} ...")
    side = run.side(f"ingest-{label.replace(' ', '-')}", who, "ingest", spec)
    try:
        result = side.expect("caught_up", float(spec["deadline_s"]) + 180)
        if key_of is not None and result["complete"]:
            say(f"  {label}: {result['events_per_s']:,} events/s; freshness probes ...")
            result["freshness_ms"] = probes.run(key_of, run.args.probes)
        side.send(op="stop")
        stopped = side.expect("stopped", 120)
        result["stopped_wall_s"] = stopped["wall_s"]
        result["memory_mb_at_stop"] = stopped["memory_mb"]
    except SideError as exc:
        result = {"error": error_of(exc)}
    finally:
        side.close()
    say(f"  {label}: {summary_line(result)}")
    return result


def summary_line(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"FAILED: {result['error'][:300]}"
    fresh = result.get("freshness_ms", {})
    line = (f"{result['events']:,} events, {result['events_per_s']:,}/s to completion, "
            f"{result['steady_events_per_s']:,}/s steady")  # fmt: skip
    return line + (f"; freshness p50 {fresh['p50']:.0f} ms, p99 {fresh['p99']:.0f} ms"
                   if fresh.get("n") else "")  # fmt: skip


def check_ingest(events: pl.DataFrame, redis: Any, ours_prefix: str | None,
                 quix_prefix: str | None, n: int = 200) -> dict[str, Any]:  # fmt: skip
    """Quix's last window [start, end] per card and our view read at `end`, against the
    produced events: Quix's rule [end - 1h, end] (inclusive), ours [floor_1m(end) - 59m,
    end]. Values equal within 1e-9 (relative)."""
    if quix_prefix is None:
        return {"skipped": "no Quix results to compare"}
    cards = events["card_id"].unique().sort().sample(min(n, events["card_id"].n_unique()),
                                                     seed=3).to_list()  # fmt: skip
    view = ours_side.ingest_view("unused")
    store = RedisOnlineStore(redis, ours_side.JOIN_KEYS, prefix=ours_prefix or "")
    by_card = events.partition_by("card_id", as_dict=True)
    counts = {"cards": 0, "quix_vs_events": 0, "ours_vs_events": 0, "ours_vs_quix": 0}
    examples: list[str] = []
    features = ["amount_count_1h", "amount_sum_1h", "amount_mean_1h"]
    for card in cards:
        raw = redis.get(quix_key(quix_prefix, card))
        if raw is None:
            continue
        quix, mine = json.loads(raw), by_card[(card,)]
        end = int(quix["end"])
        counts["cards"] += 1
        truth = window_values(mine, int(quix["start"]), end)
        counts["quix_vs_events"] += agree(truth, quix)
        if not agree(truth, quix) and len(examples) < 5:
            examples.append(f"quix {card} {quix} vs events {truth}")
        if ours_prefix is None:
            continue
        got = store.read(view, pl.DataFrame({"card_id": [card]}), end, features).row(0)
        ours = dict(zip(("count", "sum", "mean"), got, strict=True))
        truth = window_values(mine, end // 60_000 * 60_000 - 59 * 60_000, end)
        counts["ours_vs_events"] += agree(truth, ours)
        if not agree(truth, ours) and len(examples) < 5:
            examples.append(f"ours {card} at {end}: {ours} vs events {truth}")
        counts["ours_vs_quix"] += agree(ours, quix)
    return {**counts, "examples": examples}


def window_values(events: pl.DataFrame, start: int, end: int) -> dict[str, Any]:
    inside = events.filter(pl.col("ts").is_between(start, end))
    total = float(inside["amount"].sum()) if inside.height else 0.0
    return {"count": inside.height, "sum": total,
            "mean": total / inside.height if inside.height else None}  # fmt: skip


def agree(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(same(a.get(k), b.get(k)) for k in ("count", "sum", "mean"))


def ingest_part(run: Run) -> dict[str, Any]:
    args, kafka = run.args, run.kafka
    topic = f"peers-ingest-{uuid.uuid4().hex[:8]}"
    out: dict[str, Any] = {"events": args.events, "cards": args.cards, "skew": args.skew,
                           "partitions": 4, "batch_size": args.batch_size,
                           "batch_wait_ms": args.batch_wait_ms,
                           "quix_commit_interval_s": args.batch_wait_ms / 1000,
                           "probes": args.probes}  # fmt: skip
    with ingest_bench.registry(kafka, f"_schemas-{topic}") as registry_url:
        admin = AdminClient({"bootstrap.servers": kafka})
        admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(30)
        client = RegistryClient(registry_url)
        schema_id = int(client.register(f"{topic}-value", ingest_bench.SCHEMA)["id"])
        client.close()
        stream = Payments(args.events, args.cards, schema_id, args.skew)
        say(f"ingest: producing {args.events:,} events over {args.cards:,} cards ...")
        started = time.perf_counter()
        events = produce(kafka, topic, stream)
        out["produce_events_per_s"] = round(args.events / (time.perf_counter() - started))
        busiest = events.group_by("card_id").len().sort("len", descending=True)
        out["busiest_cards_events"] = busiest["len"].head(3).to_list()
        out["cards_with_events"] = busiest.height
        bench = ingest_bench.Bench(kafka, registry_url, topic, args.events, args.batch_size,
                                   run.redis_url)  # fmt: skip
        floor = ingest_bench.floor(bench)  # its events_per_s: after the first batch
        floor["steady_events_per_s"] = floor["events_per_s"]
        floor["events_per_s"] = round(floor["events"] / floor["wall_s"])
        say(f"  floor: {floor['events_per_s']:,} events/s to completion, "
            f"{floor['steady_events_per_s']:,} steady")  # fmt: skip
        out["floor"] = floor
        redis = connect(run.redis_url, check=True)
        common = {"bootstrap": kafka, "registry_url": registry_url, "topic": topic,
                  "subject": f"{topic}-value", "n": args.events,
                  "deadline_s": args.ingest_deadline}  # fmt: skip
        probes = Probes(kafka, topic, stream, redis)
        runs, prefixes = ingest_ours(run, common, probes)
        quix_runs, quix_prefix = ingest_quix(run, common, probes)
        out["runs"] = runs | quix_runs
        out["check"] = check_ingest(events, redis, prefixes.get("ours"), quix_prefix)
        redis.close()
    for result in out["runs"].values():
        if "steady_events_per_s" in result:  # steady against steady
            result["x_floor"] = round(result["steady_events_per_s"] / floor["events_per_s"], 3)
    return out


def ingest_ours(run: Run, common: dict[str, Any],
                probes: Probes) -> tuple[dict[str, Any], dict[str, str]]:  # fmt: skip
    runs, prefixes = {}, {}
    view = ours_side.ingest_view(common["subject"])
    for label, parquet in (("ours", False), ("ours+parquet", True)):
        prefix = f"peers-{label.replace('+', '-')}-{uuid.uuid4().hex[:6]}"
        spec = {**common, "label": label.replace("+", "-"), "redis_url": run.redis_url,
                "prefix": prefix, "batch_size": run.args.batch_size,
                "batch_wait_ms": run.args.batch_wait_ms, "parquet": parquet}  # fmt: skip
        runs[label] = consume(run, label, "ours", spec, probes=probes,
                              key_of=partial(ours_key, prefix, view))  # fmt: skip
        if "error" not in runs[label]:
            prefixes[label] = prefix
    return runs, prefixes


def ingest_quix(run: Run, common: dict[str, Any],
                probes: Probes) -> tuple[dict[str, Any], str | None]:  # fmt: skip
    if not run.ok("quix"):
        return {"quix sliding": {"error": f"not installed: {run.peers['quix']['error']}"}}, None
    runs, sliding_prefix = {}, None
    host, port = run.redis_host_port
    for variant in ("sliding", "tumbling"):
        prefix = f"peers-quix-{uuid.uuid4().hex[:6]}"
        spec = {**common, "group": f"peers-quix-{variant}-{uuid.uuid4().hex[:6]}",
                "variant": variant, "prefix": prefix, "redis_host": host, "redis_port": port,
                "commit_interval": run.args.batch_wait_ms / 1000, "grace_ms": 10_000}  # fmt: skip
        key_of = partial(quix_key, prefix) if variant == "sliding" else None
        runs[f"quix {variant}"] = consume(run, f"quix {variant}", "quix", spec, probes=probes,
                                          key_of=key_of)  # fmt: skip
        if variant == "sliding" and "error" not in runs["quix sliding"]:
            sliding_prefix = prefix
    return runs, sliding_prefix


# --- online -------------------------------------------------------------------------------


def http_values(body: bytes) -> dict[str, list[Any]]:
    """Columns of Feast's answer: {"metadata": {"feature_names"}, "results": [{"values"}]}."""
    answer = json.loads(body)
    names = answer["metadata"]["feature_names"]
    return {name: r["values"] for name, r in zip(names, answer["results"], strict=True)}


class Online:
    """The lookup kinds, each timed for some seconds at a time."""

    PATHS: ClassVar[dict[str, str]] = {"ours": "/features", "feast": "/get-online-features"}

    def __init__(self, run: Run, refs: list[str], sets: dict[int, list[list[str]]]) -> None:
        self.run, self.refs, self.sets = run, refs, sets
        self.redis = connect(run.redis_url, check=True)
        keys = [k for k in self.redis.scan_iter(count=5_000)
                if k.endswith(FEAST_PROJECT["online"].encode())]  # fmt: skip
        self.feast_hashes, rng = len(keys), random.Random(9)
        self.floor_sets = {n: [rng.sample(keys, n) for _ in range(50)] for n in SIZES
                           if len(keys) >= n}  # fmt: skip
        self.workers: dict[str, Side] = {}
        self.clients: dict[str, Http] = {}
        self.requests: dict[tuple[str, int], list[bytes]] = {}

    def serve(self, who: str, port: int) -> None:
        client = self.clients[who] = Http(port)
        for n in SIZES:
            self.requests[(who, n)] = [client.request(self.PATHS[who], self.body(cards))
                                       for cards in self.sets[n]]  # fmt: skip

    def body(self, cards: list[str]) -> bytes:
        return json.dumps({"entities": {"card_id": cards}, "features": self.refs,
                           "full_feature_names": True}).encode()  # fmt: skip

    def kinds(self) -> list[tuple[str, int]]:
        out = [("floor", n) for n in SIZES if n in self.floor_sets]
        out += [(f"{who} sdk", n) for who in self.workers for n in SIZES]
        return out + [(f"{who} http", n) for who in self.clients for n in SIZES]

    def measure(self, kind: str, size: int, seconds: float, first: int) -> list[float]:
        """Samples (ms) of ``kind`` at ``size`` entities for ``seconds``."""
        if kind == "floor":
            return self.timed(self.hgetall, self.floor_sets[size], seconds, first)
        who, mode = kind.split()
        if mode == "sdk":
            self.workers[who].send(op="sdk", size=size, seconds=seconds, first=first)
            return list(self.workers[who].expect("samples", seconds + 120)["ms"])
        return self.timed(partial(self.post, who), self.requests[(who, size)], seconds, first)

    @staticmethod
    def timed(call: Callable[[Any], None], pool: list[Any], seconds: float,
              first: int) -> list[float]:  # fmt: skip
        clock, samples, i = time.perf_counter, [], first
        end = clock() + seconds
        while clock() < end:
            item, i = pool[i % len(pool)], i + 1
            began = clock()
            call(item)
            samples.append((clock() - began) * 1000)
        return samples

    def hgetall(self, keys: list[bytes]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        pipe.execute()

    def post(self, who: str, request: bytes) -> None:
        status, body = self.clients[who].exchange(request)
        if status != 200:
            raise RuntimeError(f"{who} http: HTTP {status}: {body[:300]!r}")

    def rounds(self, rounds: int, seconds: float) -> dict[str, Any]:
        """Warm-up, then rounds of every kind in a shuffled order."""
        kinds, failed = self.kinds(), {}
        samples: dict[str, list[float]] = {f"{k} {n}": [] for k, n in kinds}
        order_rng = random.Random(4)
        for r in range(rounds + 1):  # round 0 warms up
            order = [kn for kn in kinds if f"{kn[0]} {kn[1]}" not in failed]
            order_rng.shuffle(order)
            for kind, n in order:
                name = f"{kind} {n}"
                try:
                    got = self.measure(kind, n, seconds if r else min(seconds, 0.5), 1000 * r)
                except (SideError, RuntimeError, OSError) as exc:
                    failed[name] = error_of(exc)
                    continue
                if r:
                    samples[name] += got
            say(f"  round {r}/{rounds} done" if r else "  warmed up")
        return {"latency_ms": {name: quantiles(ms) for name, ms in samples.items() if ms},
                "failed": failed,
                "http_reconnects": {w: c.reconnects for w, c in self.clients.items()}}  # fmt: skip

    def check(self, at_ms: int) -> dict[str, Any]:
        """Every value of 100 cards at the end of the history: ours against Feast's."""
        cards, full = self.sets[100][0], [r.replace(":", "__") for r in self.refs]
        self.workers["ours"].send(op="values", cards=cards, at_ms=at_ms)
        ours = self.workers["ours"].expect("values", 120)["columns"]
        checks: dict[str, Any] = {}
        if "feast" in self.workers:
            self.workers["feast"].send(op="values", cards=cards)
            theirs = self.workers["feast"].expect("values", 120)["columns"]
            checks["Feast SDK vs ours"] = compare_columns(ours, theirs, full)
        if "feast" in self.clients:
            client = self.clients["feast"]
            status, raw = client.exchange(client.request(self.PATHS["feast"], self.body(cards)))
            checks["Feast server vs ours"] = (
                compare_columns(ours, http_values(raw), full) if status == 200
                else {"error": f"HTTP {status}: {raw[:200]!r}"})  # fmt: skip
        return checks

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.redis.close()


def online_load(run: Run, prefix: str, out_dir: Path) -> dict[str, Any]:
    args = run.args
    say(f"online: {args.online_cards:,} cards x {args.online_days:g} days of payments into "
        "Redis by our store ...")  # fmt: skip
    loader = run.side("online-load", "ours", "online-load",
                      {"redis_url": run.redis_url, "prefix": prefix, "cards": args.online_cards,
                       "days": args.online_days, "batch_minutes": 120, "out": str(out_dir),
                       "pools": {str(k): v for k, v in POOLS.items()}})  # fmt: skip
    try:
        loaded = loader.expect("loaded", 1800)
    finally:
        loader.close()
    say(f"  loaded {loaded['events']:,} payments in {loaded['load']['seconds']} s")
    return loaded


def feast_setup(run: Run, label: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Feast's repo: apply (and materialize when asked); {"error"} if it failed."""
    setup = run.side(label, "feast", "setup", spec)
    try:
        return setup.expect("ready", 900)
    except SideError as exc:
        return {"error": error_of(exc)}
    finally:
        setup.close()


def feast_serve(repo: Path, logs: Path) -> Any:
    port = free_port()
    command = [str(setup_venvs.VENVS / "feast" / "bin" / "feast"), "-c", str(repo), "serve",
               "-h", "127.0.0.1", "-p", str(port), "--workers", "1", "--no-access-log",
               "--max-requests", "0"]  # fmt: skip
    return server(command, port, "/health", logs / "feast-serve.log")


def settle(redis_url: str, timeout_s: float = 120.0) -> None:
    """Before timing lookups: the loads' writes flushed to disk (`os.sync`) and Redis
    done with background persistence. Right after a load into a Redis with an
    append-only file, round trips stalled by 20-40 ms for a while (one-off: a
    100-entity round trip's p99 28.7 ms over the first 300 lookups after loading,
    4.1 ms over the next 900), which would be timed as ours and Feast's lookups."""
    os.sync()
    client = connect(redis_url, check=True)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = client.info("persistence")
            busy = ("aof_rewrite_in_progress", "rdb_bgsave_in_progress", "aof_pending_bio_fsync")
            if not any(int(info.get(k, 0)) for k in busy):
                return
            time.sleep(0.5)
        say(f"  Redis still busy persisting after {timeout_s:g} s; timing anyway")
    finally:
        client.close()


def online_part(run: Run) -> dict[str, Any]:
    args, prefix = run.args, f"peers-online-{uuid.uuid4().hex[:6]}"
    out_dir = run.work / "online"
    out_dir.mkdir()
    loaded = online_load(run, prefix, out_dir)
    refs, types, at_ms = loaded.pop("refs"), loaded.pop("types"), loaded["at_ms"]
    out: dict[str, Any] = {"cards": args.online_cards, "days": args.online_days,
                           "rounds": args.rounds, "seconds": args.seconds, "load": loaded,
                           "pools": POOLS}  # fmt: skip
    repo, feast = out_dir / "feast-repo", run.ok("feast")
    if feast:
        say("online: Feast apply + materialize into the same Redis ...")
        host, port = run.redis_host_port
        out["feast_setup"] = feast_setup(run, "online-feast-setup", {
            "repo": str(repo), "project": FEAST_PROJECT["online"], "redis": f"{host}:{port}",
            "tables": str(out_dir / "feast"), "types": types, "materialize_at_ms": at_ms}
        )  # fmt: skip
        feast = "error" not in out["feast_setup"]
    sets = {int(k): v for k, v in json.loads((out_dir / "sets.json").read_text()).items()}
    bench, errors = Online(run, refs, sets), {}
    out["feast_hashes"] = bench.feast_hashes
    with ExitStack() as stack:
        stack.callback(bench.close)
        say("online: workers and servers ...")
        spec = {"redis_url": run.redis_url, "prefix": prefix, "sets": str(out_dir / "sets.json")}
        worker = bench.workers["ours"] = run.side("online-ours-worker", "ours", "online", spec)
        stack.callback(worker.close)
        worker.expect("ready", 300)
        bench.serve("ours", stack.enter_context(serving_bench.serve(run.redis_url, prefix, 1))[0])
        if feast:
            try:
                spec = {"repo": str(repo), "refs": refs, "sets": str(out_dir / "sets.json")}
                worker = run.side("online-feast-worker", "feast", "online", spec)
                stack.callback(worker.close)
                worker.expect("ready", 300)
                bench.workers["feast"] = worker
                bench.serve("feast", stack.enter_context(feast_serve(repo, run.logs)))
            except (SideError, RuntimeError) as exc:
                errors["feast"] = error_of(exc)
        settle(run.redis_url)
        say(f"online: {args.rounds} interleaved rounds of {len(bench.kinds())} kinds x "
            f"{args.seconds:g} s ...")  # fmt: skip
        out |= bench.rounds(args.rounds, args.seconds)
        out["failed"] |= errors
        out["check"] = bench.check(at_ms)
    return out


# --- point in time ------------------------------------------------------------------------


def pit_case(run: Run, label: str, who: str, spec: dict[str, Any]) -> dict[str, Any]:
    """One case in a child process: its result, or how it was stopped; peak RSS polled."""
    side = run.side(f"pit-{label.replace(' ', '-')}", who, "pit", spec)
    started, peak, limit = time.perf_counter(), 0.0, run.args.max_rss_gb * 1024
    while True:
        with suppress(OSError):
            peak = max(peak, memory_mb(side.pid).get("VmHWM", 0.0))
        try:
            got = side.results.get(timeout=0.2)
        except queue.Empty:
            elapsed = time.perf_counter() - started
            over = ("time" if elapsed > run.args.max_seconds else
                    "memory" if peak > limit else None)  # fmt: skip
            if over:
                side.kill()
                side.close(5)
                return {"error": f"stopped after {elapsed:.0f} s at RSS {peak:,.0f} MB (limits "
                        f"{run.args.max_seconds:g} s, {run.args.max_rss_gb:g} GB)",
                        "stopped_for": over, "elapsed_s": round(elapsed, 1),
                        "peak_rss_mb": peak}  # fmt: skip
            continue
        wall = time.perf_counter() - started
        if got is None or got.pop("kind", None) != "result":
            side.close(30)
            return {"error": f"exited {side.proc.returncode}: {side.tail()}",
                    "elapsed_s": round(wall, 1), "peak_rss_mb": peak}  # fmt: skip
        side.close(120)
        return {**got, "process_wall_s": round(wall, 1)}


def compare_pit(ours_file: Path, feast_file: Path) -> dict[str, Any]:
    """Per feature, where both returned the row (joined on `label`): equal values (floats
    within 1e-9 relative; null and NaN alike), and how the others differ."""
    ours, feast = pl.read_parquet(ours_file), pl.read_parquet(feast_file)
    features = [c for c in ours.columns if "__" in c]
    both = ours.join(feast.select("label", *features), on="label", how="inner", suffix="_f")
    out: dict[str, Any] = {"rows": ours.height, "rows_feast_returned": feast.height,
                           "rows_compared": both.height, "features": {}}  # fmt: skip
    tally: dict[str, list[int]] = {}
    for name in features:
        a, b = both[name], both[f"{name}_f"]
        if a.dtype.is_numeric() or b.dtype.is_numeric():
            a, b = a.cast(pl.Float64), b.cast(pl.Float64, strict=False)
            a_null, b_null = a.is_null() | a.is_nan(), b.is_null() | b.is_nan()
            larger = a.abs().zip_with(a.abs() >= b.abs(), b.abs())
            close = ((a - b).abs() <= 1e-9 * larger).fill_null(False)
            equal = (a_null & b_null) | (~a_null & ~b_null & close)
        else:
            a_null, b_null = a.is_null(), b.is_null()
            equal = (a_null & b_null) | (a == b).fill_null(False)
        row = {"equal": int(equal.sum()), "feast_null_ours_not": int((b_null & ~a_null).sum()),
               "ours_null_feast_not": int((a_null & ~b_null).sum())}  # fmt: skip
        row["both_values_differ"] = both.height - sum(row.values())
        out["features"][name] = row
        counts = tally.setdefault(name.split("__")[1].rsplit("_", 2)[-2], [0, 0])
        counts[0] += row["equal"]
        counts[1] += both.height
    out["equal_pct_by_function"] = {f: round(100 * e / max(n, 1), 2)
                                    for f, (e, n) in sorted(tally.items())}  # fmt: skip
    equal = sum(r["equal"] for r in out["features"].values())
    out["equal_pct"] = round(100 * equal / max(both.height * len(features), 1), 3)
    return out


def pit_prepare(run: Run, root: Path) -> dict[str, Any]:
    args = run.args
    say(f"pit: {args.pit_cards:,} cards x {args.pit_days:g} days of payments as Parquet, and "
        "Feast's feature table (ours at every event) ...")  # fmt: skip
    prep = run.side("pit-prepare", "ours", "pit-prepare",
                    {"root": str(root), "cards": args.pit_cards, "days": args.pit_days,
                     "per_day": 5.0, "small": args.pit_small, "large": args.pit_large,
                     "medium": args.pit_medium,
                     "exact": args.pit_small})  # fmt: skip
    try:
        prepared = prep.expect("prepared", 3600)
    finally:
        prep.close()
    say(f"  {prepared['events']:,} events; feature table {prepared['feature_table_rows']:,} "
        f"rows in {prepared['feature_table_s']} s")  # fmt: skip
    return prepared


def pit_part(run: Run) -> dict[str, Any]:
    args, root = run.args, run.work / "pit"
    root.mkdir()
    prepared = pit_prepare(run, root)
    refs, types = prepared.pop("refs"), prepared.pop("types")
    out: dict[str, Any] = {"history": prepared, "max_seconds": args.max_seconds,
                           "max_rss_gb": args.max_rss_gb, "cases": {}, "check": {}}  # fmt: skip
    repo, feast = root / "feast-repo", run.ok("feast")
    if feast:
        out["feast_setup"] = feast_setup(run, "pit-feast-setup", {
            "repo": str(repo), "project": FEAST_PROJECT["pit"], "tables": str(root / "feast"),
            "types": types})  # fmt: skip
        feast = "error" not in out["feast_setup"]
    sizes = {
        "exact": args.pit_small,
        "small": args.pit_small,
        "medium": args.pit_medium,
        "large": args.pit_large,
    }
    sizes = {name: n for name, n in sizes.items() if n}
    for rows, who in ((r, w) for r in sizes for w in ("ours", "feast")):
        label = f"{who} {rows}"
        if who == "feast" and not feast:
            out["cases"][label] = {"error": "Feast is not available (see feast_setup)"}
            continue
        spec = {"root": str(root), "rows": str(root / f"rows_{rows}.parquet"),
                "out": str(root / f"out_{who}_{rows}.parquet") if sizes[rows] <= 10**5 else None,
                "repo": str(repo), "refs": refs}  # fmt: skip
        result = out["cases"][label] = {**pit_case(run, label, who, spec), "rows": sizes[rows]}
        say(f"pit: {label} ({sizes[rows]:,} rows): " + (
            f"{result['seconds']} s, peak RSS {result['peak_rss_mb']:,.0f} MB, "
            f"{result['rows_out']:,} rows out" if "seconds" in result
            else f"FAILED: {result['error'][:300]}"))  # fmt: skip
    for rows in ("exact", "small"):
        files = [root / f"out_{who}_{rows}.parquet" for who in ("ours", "feast")]
        if all(f.exists() for f in files):
            try:
                out["check"][rows] = compare_pit(*files)
            except Exception as exc:  # recorded; the timings stand
                out["check"][rows] = {"error": error_of(exc)}
    return out


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="a ~3 minute run: small sizes everywhere")
    add("--only", default=",".join(PARTS), help=f"parts to run ({','.join(PARTS)})")
    add("--events", type=int, help="ingest events (default 1000000; --quick 50000)")
    add("--cards", type=int, help="ingest cards (default 100000; --quick 10000)")
    add("--skew", type=float, default=1.5,
        help="ingest card skew: card = int(cards * r ** skew), r uniform (1.5)")  # fmt: skip
    add("--batch-size", type=int, default=10_000, help="our records per batch (10000)")
    add("--batch-wait-ms", type=int, default=500,
        help="our batch wait; Quix's commit_interval and poll timeout (500 ms)")  # fmt: skip
    add("--probes", type=int, help="freshness probes per consumer (default 20; --quick 6)")
    add("--ingest-deadline", type=float, help="seconds a consumer may take (600; --quick 120)")
    add("--online-cards", type=int, help="online cards (default 10000; --quick 2000)")
    add("--online-days", type=float, help="online history days (default 3; --quick 1)")
    add("--rounds", type=int, help="online rounds (default 6; --quick 2)")
    add("--seconds", type=float, help="online seconds per kind per round (default 1; --quick 0.5)")
    add("--pit-cards", type=int, help="point-in-time cards (default 20000; --quick 2000)")
    add("--pit-days", type=float, help="point-in-time history days (default 7; --quick 3)")
    add("--pit-small", type=int, help="small case rows (default 10000; --quick 5000)")
    add("--pit-medium", type=int, help="medium case rows (default 100000; --quick 0: none)")
    add("--pit-large", type=int, help="large case rows (default 1000000; --quick 20000)")
    add("--max-seconds", type=float, help="stop a point-in-time case after (default 300; "
        "--quick 90)")  # fmt: skip
    add("--max-rss-gb", type=float, default=12.0, help="stop a case past this RSS (12 GB)")
    add("--reinstall", action="store_true", help="make the peers' venvs again")
    add("--out", type=Path, default=RESULTS, help=f"JSON results ({RESULTS}); .md, .png beside")
    add("--report-from", type=Path, help="measure nothing: write .md and .png again from this "
        "run's JSON")  # fmt: skip
    args = parser.parse_args(argv)
    defaults = {"events": (1_000_000, 50_000), "cards": (100_000, 10_000), "probes": (20, 6),
                "ingest_deadline": (600.0, 120.0), "online_cards": (10_000, 2_000),
                "online_days": (3.0, 1.0), "rounds": (6, 2), "seconds": (1.0, 0.5),
                "pit_cards": (20_000, 2_000), "pit_days": (7.0, 3.0),
                "pit_small": (10_000, 5_000), "pit_large": (1_000_000, 20_000),
                "pit_medium": (100_000, 0),
                "max_seconds": (300.0, 90.0)}  # fmt: skip
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if unknown := set(args.parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(unknown)}; known: {', '.join(PARTS)}")
    return args


def machine(redis_url: str) -> dict[str, Any]:
    redis = connect(redis_url, check=True)
    version = redis.info("server")["redis_version"]
    redis.close()
    info = describe(("polars", "pyarrow", "confluent-kafka", "redis", "hiredis", "fastapi",
                     "uvicorn"), kafka=f"Apache Kafka {Settings().kafka_version} (KRaft, local)",
                    redis=f"redis-server {version} (local)")  # fmt: skip
    info["versions"]["librdkafka"] = libversion()[0]
    say(f"{info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB; {info['kafka']}; "
        f"{info['redis']}; Python {info['python']}; {info['versions']}")  # fmt: skip
    return info


def measure(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Start the services, run the parts (a failed part is recorded), keep the logs."""
    parts: dict[str, Callable[[Run], dict[str, Any]]] = {
        "ingest": ingest_part, "online": online_part, "pit": pit_part}  # fmt: skip
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fs-bench-peers-")))
        (logs := work / "logs").mkdir()
        kafka, redis_url = stack.enter_context(services(work / "stack"))
        report["machine"] = machine(redis_url)
        run = Run(args, kafka, redis_url, report["peers"], work, logs)
        for part in args.parts:
            began = time.perf_counter()
            try:
                report[part] = parts[part](run)
            except Exception as exc:  # recorded; the other parts still run
                report["errors"][part] = error_of(exc)
                say(f"{part} FAILED: {error_of(exc)}")
            report["durations_s"][part] = round(time.perf_counter() - began, 1)
            say(f"{part} took {report['durations_s'][part]:.0f} s")
        shutil.rmtree(LOGS, ignore_errors=True)
        shutil.copytree(logs, LOGS)
        say(f"the sides' logs: {LOGS}")


def write(report: dict[str, Any], out: Path) -> None:
    """The verdicts, then the JSON, Markdown and PNG."""
    report["verdicts"] = {
        "ingest": reporting.ingest_verdict(report.get("ingest") or {}),
        "online": reporting.online_verdict((report.get("online") or {}).get("latency_ms", {})),
        "pit": reporting.pit_verdict((report.get("pit") or {}).get("cases", {})),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    text = reporting.markdown(report)
    out.with_suffix(".md").write_text(text)
    reporting.chart(report, out.with_suffix(".png"))
    print("\n" + text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_from:
        write(json.loads(args.report_from.read_text()), args.out)
        return 0
    started = time.perf_counter()
    report: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                              "argv": " ".join(sys.argv[1:] if argv is None else argv),
                              "parameters": {k: v for k, v in vars(args).items() if k != "out"},
                              "targets": reporting.TARGETS, "errors": {},
                              "durations_s": {}}  # fmt: skip
    say("peers' virtualenvs ...")
    report["peers"] = {peer: setup_venvs.setup(peer, args.reinstall, say=say)
                       for peer in setup_venvs.PEERS}  # fmt: skip
    for peer, s in report["peers"].items():
        say(f"  {peer}: " + (json.dumps(s["versions"]) if s["ok"] else f"FAILED {s['error']}"))
    measure(args, report)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    write(report, args.out)
    say(f"wrote {args.out}, .md and .png (whole run {report['wall_s']:.0f} s)")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

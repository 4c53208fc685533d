"""The demo: the whole product on one machine, from nothing, in one command.

1. start a local Kafka, Redis and contract registry of the demo's own (in
   ``<cache>/demo``), register the example contract with the stock Confluent client;
2. start the payments consumer (the example definition on a topic of this run) and the
   HTTP feature server, in this process;
3. stream card payments (`demo.generator`): the first half, then a training baseline of
   it, then the second half, whose amounts shift; live progress all along;
4. print lookups of a few cards over HTTP, the dead letters by reason, the alerts with
   their owners, a point-in-time training set (written to Parquet), and where to look;
5. stop what it started, unless ``keep``.
"""

from __future__ import annotations

import gc
import json
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from featurestore.demo.generator import HOURS, CardPayments
from featurestore.errors import import_extra

ROOT = Path(__file__).resolve().parents[2]
MINUTES = 60_000


@dataclass(frozen=True)
class DemoOptions:
    events: int = 100_000
    rate: float = 0.0  # events/s; 0: as fast as the machine goes
    keep: bool = False
    output: Path = Path("demo-output")
    cards: int = 20_000


def run_demo(options: DemoOptions, console: Console) -> None:
    # Before any service starts: the demo's producer and report need the 'demo' extra.
    import_extra("confluent_kafka.schema_registry.avro", "demo", "the demo's producer")
    import_extra("matplotlib", "demo", "the demo's drift report")
    from featurestore.local import LocalStack
    from featurestore.settings import Settings

    run = uuid.uuid4().hex[:6]
    settings = Settings()
    home = settings.cache_dir / "demo"
    stack = LocalStack(home, settings.cache_dir, settings.kafka_version)
    options.output.mkdir(parents=True, exist_ok=True)
    with ExitStack() as cleanup:
        started = time.monotonic()
        with console.status("starting local Kafka, Redis and the registry (first run: "
                            "downloading Kafka's jars)"):  # fmt: skip
            endpoints = stack.up()
        if not options.keep:
            cleanup.callback(stack.down)
        assert endpoints.kafka
        assert endpoints.redis
        assert endpoints.registry
        console.print(f"[bold]1.[/] local services up in {time.monotonic() - started:.0f} s: "
                      f"Kafka {endpoints.kafka}, Redis {endpoints.redis}, registry "
                      f"{endpoints.registry}")  # fmt: skip
        demo = Demo(run, endpoints.kafka, endpoints.redis, endpoints.registry, options, console)
        demo.register_contract()
        server_url = cleanup.enter_context(demo.feature_server())
        consumer = cleanup.enter_context(demo.consumer())
        console.print(f"[bold]2.[/] consumer {demo.definition.name} on topic {demo.topic}; "
                      f"feature server at {server_url}")  # fmt: skip
        now = int(time.time() * 1000)
        stream = CardPayments(options.events, now - 2 * HOURS, now - MINUTES, cards=options.cards)
        half, events = options.events // 2, demo.events(stream)
        console.print(f"[bold]3.[/] streaming {options.events:,} card payments of "
                      f"{options.cards:,} cards: the first half as usual")  # fmt: skip
        demo.stream(events, half, consumer)
        demo.baseline(now - 2 * HOURS, stream.start + (stream.end - stream.start) // 2)
        console.print("   the second half: amounts three times larger (the drift to catch)")
        demo.stream(events, options.events - half, consumer)
        consumer.runtime.stop()  # its last monitoring check runs on the way out
        consumer.thread.join(60)
        busiest = [c.id for c in sorted(stream.cards, key=lambda c: -c.weight)[:3]]
        demo.report(server_url, busiest)
        console.print(f"demo done in {time.monotonic() - started:.0f} s")
        if options.keep:
            console.print(f"kept: the feature server at {server_url} until Ctrl-C; the local "
                          f"services until `featurestore local down --home {home}`")  # fmt: skip
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                console.print("feature server stopped; the local services keep running")


@dataclass
class RunningConsumer:
    runtime: Any
    thread: threading.Thread
    started: float


class Demo:
    def __init__(  # noqa: PLR0917
        self, run: str, kafka: str, redis_url: str, registry: str, options: DemoOptions,
        console: Console,
    ) -> None:  # fmt: skip
        from featurestore.online import RedisOnlineStore, connect
        from featurestore.stream.definition import load_definition

        self.kafka, self.redis_url, self.registry = kafka, redis_url, registry
        self.options, self.console = options, console
        self.topic, self.prefix = f"demo-payments-{run}", f"demo{run}"
        self.alerts_topic = f"demo-alerts-{run}"
        self.offline = str(options.output.resolve() / "offline")
        shutil.rmtree(self.offline, ignore_errors=True)
        text = (ROOT / "consumers" / "payments.toml").read_text()
        monitoring = f'check_interval = "2s"\nalerts_topic = "{self.alerts_topic}"\n'
        edits = [('name = "payments"', f'name = "demo-{run}"'),
                 ('topics = ["payments"]', f'topics = ["{self.topic}"]'),
                 ('group = "fs-payments"', f'group = "fs-demo-{run}"'),
                 ("metrics_port = 9464", "metrics_port = 0"),
                 ('prefix = "fs"', f'prefix = "{self.prefix}"\nredis_url = "{redis_url}"'),
                 ('freshness = "15m"', 'freshness = "3h"'),  # the demo replays 2 hours
                 ('check_interval = "30s"', monitoring + "sample_entities = 0")]  # fmt: skip
        for old, new in edits:
            if old not in text:
                raise ValueError(f"consumers/payments.toml no longer holds {old!r}")
            text = text.replace(old, new, 1)
        self.folder = options.output / "definitions"
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "demo.toml").write_text(text)
        self.definition = load_definition(self.folder / "demo.toml")
        self.store = RedisOnlineStore(connect(redis_url), self.definition.join_keys, self.prefix)
        self.produced: Counter[str] = Counter()

    def register_contract(self) -> None:
        from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

        client = SchemaRegistryClient({"url": self.registry})
        text = (ROOT / "schemas" / "card_payment.v1.avsc").read_text()
        schema_id = client.register_schema("payments-value", Schema(text, "AVRO"))
        self.console.print(f"   contract payments-value registered (schema id {schema_id}) "
                           "with the stock confluent_kafka client")  # fmt: skip

    @contextmanager
    def feature_server(self) -> Iterator[str]:
        import uvicorn

        from featurestore.local.process import free_port
        from featurestore.online import connect_async
        from featurestore.serving import AsyncFeatureClient, Catalog
        from featurestore.serving.server import create_app

        catalog = Catalog.load(self.folder)
        app = create_app(lambda: AsyncFeatureClient(catalog, connect_async(self.redis_url)))
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning"))  # fmt: skip
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(10)

    @contextmanager
    def consumer(self) -> Iterator[RunningConsumer]:
        from featurestore.contracts.registry.client import RegistryClient
        from featurestore.stream import ConsumerRuntime

        runtime = ConsumerRuntime(self.definition, {"bootstrap.servers": self.kafka},
                                  RegistryClient(self.registry), self.offline,
                                  online=self.store)  # fmt: skip
        thread = threading.Thread(target=runtime.run, daemon=True)
        thread.start()
        running = RunningConsumer(runtime, thread, time.monotonic())
        try:
            yield running
        finally:
            runtime.stop()
            thread.join(60)
            running.runtime = None  # its Kafka clients close before the services stop
            gc.collect()

    def events(self, payments: CardPayments) -> Iterator[tuple[bytes, bytes, str]]:
        """The payments, serialised by the stock client against the demo's registry."""
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        text = (ROOT / "schemas" / "card_payment.v1.avsc").read_text()
        serializer = AvroSerializer(SchemaRegistryClient({"url": self.registry}), text)
        context = SerializationContext(self.topic, MessageField.VALUE)
        return payments.events(lambda p: serializer(p, context))

    def stream(self, events: Iterator[tuple[bytes, bytes, str]], n: int,
               consumer: RunningConsumer) -> None:  # fmt: skip
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.kafka, "linger.ms": 20,
                             "enable.idempotence": True})  # fmt: skip
        target = sum(self.produced.values()) + n
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("{task.fields[detail]}")]  # fmt: skip
        began = time.monotonic()
        with Progress(*columns, console=self.console) as bar:
            sent = bar.add_task("produced", total=target, detail="")
            read = bar.add_task("consumed", total=target, detail="")
            for i in range(n):
                key, value, kind = next(events)
                self._send(producer, key, value)
                self.produced[kind] += 1
                if self.options.rate:
                    time.sleep(max(0.0, began + i / self.options.rate - time.monotonic()))
                if i % 2_000 == 0:
                    self._progress(bar, sent, read, consumer)
            producer.flush(60)
            while consumer.runtime.stats.events_in < target and consumer.thread.is_alive():
                self._progress(bar, sent, read, consumer)
                time.sleep(0.2)
            self._progress(bar, sent, read, consumer)

    def _send(self, producer: Any, key: bytes, value: bytes) -> None:
        while True:
            try:
                producer.produce(self.topic, key=key, value=value)
                return
            except BufferError:
                producer.poll(0.1)

    def _progress(self, bar: Progress, sent: Any, read: Any, consumer: RunningConsumer) -> None:
        stats = consumer.runtime.stats
        rate = stats.events_in / max(time.monotonic() - consumer.started, 1e-3)
        dead = ", ".join(f"{r} {n}" for r, n in sorted(stats.dead_lettered.items())) or "none"
        bar.update(sent, completed=sum(self.produced.values()))
        detail = f"{rate:,.0f}/s; valid {stats.valid:,}; dead-lettered: {dead}"
        bar.update(read, completed=stats.events_in, detail=detail)

    def baseline(self, start: int, end: int) -> None:
        from featurestore.contracts import parse_contract
        from featurestore.monitor.baseline import build_baseline

        view = next(v for v in self.definition.views if v.name == "card_spend")
        contract = parse_contract((ROOT / "schemas" / "card_payment.v1.avsc").read_text())
        with self.console.status("training baseline of card_spend from the offline store"):
            built = build_baseline(view, join_keys=self.definition.join_keys[view.entity],
                                   offline_root=self.offline, event_time="ts", start=start,
                                   end=end, pii=contract.pii_fields, sample=5_000)  # fmt: skip
        built.save(self.store.client, self.prefix)
        self.console.print(f"   baseline of card_spend v{view.version}: {built.rows:,} "
                           "training rows; drift is checked against it from now on")  # fmt: skip

    def report(self, server_url: str, cards: list[str]) -> None:
        self._lookups(server_url, cards)
        self._dead_letters()
        self._alerts()
        self._training_set()
        path = self._drift_report()
        self.console.print("[bold]where to look next[/]")
        self.console.print(f"   feature server docs   {server_url}/docs  (while it runs)")
        self.console.print(f"   metrics               {server_url}/metrics")
        self.console.print(f"   drift report          {path}")
        self.console.print(f"   definitions used      {self.folder / 'demo.toml'}")
        self.console.print("   guides                docs/ (producers, serving, data "
                           "scientists, operators)")  # fmt: skip

    def _lookups(self, server_url: str, busiest: list[str]) -> None:
        import httpx

        refs = ["card_spend:amount_count_1h", "card_spend:amount_sum_1h",
                "card_spend:amount_mean_24h", "card_places:merchant_id_distinct_24h",
                "card_places:country_last_24h"]  # fmt: skip
        asked = {"entities": {"card_id": busiest}, "features": refs}
        body = httpx.post(f"{server_url}/features", json=asked).json()
        self.console.print("[bold]4.[/] lookups over HTTP (POST /features), the busiest cards:")
        for i, card in enumerate(busiest):
            values = "  ".join(f"{f['name']}={_cell(f['values'][i])}" for f in body["features"])
            first = body["features"][0]
            fresh = first["freshness_seconds"][i]
            age = "-" if fresh is None else f"{fresh:,.0f} s"
            self.console.print(f"   {card} v{first['version']} {first['statuses'][i]}, newest "
                               f"event {age} ago: {values}")  # fmt: skip

    def _dead_letters(self) -> None:
        from featurestore.stream.dlq_tools import show

        _, counts = show({"bootstrap.servers": self.kafka}, f"{self.topic}.dlq", limit=0)
        total = sum(self.produced.values())
        table = Table("reason", "dead letters", title=f"dead letters of {total:,} events "
                      f"({sum(counts.values()) / max(total, 1):.2%})")  # fmt: skip
        for reason, n in counts.most_common():
            table.add_row(reason, f"{n:,}")
        self.console.print(table)

    def _alerts(self) -> None:
        from featurestore.monitor.alerts import read_alerts

        found = read_alerts({"bootstrap.servers": self.kafka}, self.alerts_topic)
        self.console.print(f"alerts on {self.alerts_topic} (also a metric and a log line):")
        for a in found:
            self.console.print(f"   {a['status']:<8} {a['kind']} {a['subject']} {a['name']}: "
                               f"{a['statistic']} {a['value']:.3g} > {a['threshold']:.3g}"
                               f" ({a['window']}); owner {a['owner']}")  # fmt: skip
        if not found:
            self.console.print("   none fired")

    def _training_set(self) -> None:
        from featurestore.offline.events import scan_events
        from featurestore.offline.history import get_historical_features

        events = scan_events(self.offline, "payments-value", columns=["card_id", "ts"]).collect()
        rows = (
            events.sample(min(1_000, events.height), seed=1)
            .select("card_id", pl.col("ts").alias("event_timestamp"))
            .sort("event_timestamp")
        )
        views = {v.name: v for v in self.definition.views}
        refs = ["card_spend:amount_count_1h", "card_spend:amount_mean_24h",
                "card_places:merchant_id_distinct_24h"]  # fmt: skip
        keys = self.definition.join_keys
        train = get_historical_features(rows, refs, views=views, join_keys=keys,
                                        offline_root=self.offline, event_time="ts")  # fmt: skip
        path = self.options.output / "training.parquet"
        train.write_parquet(path)
        self.console.print(f"[bold]5.[/] point-in-time training set: {train.height:,} rows "
                           f"x {len(refs)} features -> {path}")  # fmt: skip
        with pl.Config(tbl_width_chars=120, tbl_cols=-1, tbl_hide_column_data_types=True):
            self.console.print(str(train.head(5)), soft_wrap=True)

    def _drift_report(self) -> Path:
        from featurestore.monitor.drift import CURRENT, Baseline
        from featurestore.monitor.report import render_html
        from featurestore.online.layout import meta_key

        view = next(v for v in self.definition.views if v.name == "card_spend")
        baseline = Baseline.load(self.store.client, self.prefix, view.name, view.version)
        raw = self.store.client.hget(meta_key(self.prefix, view.name, view.version), CURRENT)
        path = self.options.output / "drift-report.html"
        if baseline is not None:
            path.write_text(render_html(view, baseline, json.loads(raw) if raw else None))
        return path


def _cell(value: Any) -> str:
    return "null" if value is None else f"{value:,.2f}" if isinstance(value, float) else str(value)

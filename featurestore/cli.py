"""``featurestore``: the command line. It wires the packages together; no logic of its
own lives here beyond parsing flags and printing results.

Every FeatureStoreError is printed as its message (which says what to do next) and
exits with status 1, without a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from featurestore.cli_monitor import audit_app, monitor_app
from featurestore.cli_views import backfill, open_store, views_app
from featurestore.contracts import parse_contract
from featurestore.contracts.registry.client import RegistryClient
from featurestore.errors import ConfigError, FeatureStoreError, RegistryError
from featurestore.kafka_access import check_kafka_access
from featurestore.local import LocalStack, with_local_defaults
from featurestore.settings import Settings, redacted

app = typer.Typer(
    help="Streaming feature store and online validator: Avro contracts on Kafka, "
    "windowed features in Redis and Parquet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
local_app = typer.Typer(
    help="Local Kafka, Redis and registry for development (real processes, cached under "
    "the user's cache dir).",
    no_args_is_help=True,
)
registry_app = typer.Typer(help="The contract registry (Confluent-compatible).")
schemas_app = typer.Typer(
    help="Register, check and inspect contracts in the registry.", no_args_is_help=True
)
dlq_app = typer.Typer(help="Inspect and replay dead-letter topics.", no_args_is_help=True)
app.add_typer(local_app, name="local")
app.add_typer(dlq_app, name="dlq")
app.add_typer(registry_app, name="registry")
app.add_typer(schemas_app, name="schemas")
app.add_typer(views_app, name="views")
app.add_typer(monitor_app, name="monitor")
app.add_typer(audit_app, name="audit")
app.command("backfill")(backfill)

console = Console(stderr=True)
log = logging.getLogger("featurestore.cli")

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Runtime dir of the local stack (default: $FEATURESTORE_LOCAL_HOME or "
        "<cache dir>/local).",
        show_default=False,
    ),
]


def _stack(home: Path | None) -> LocalStack:
    settings = Settings()
    if home is not None:
        settings = settings.model_copy(update={"local_home": home})
    return LocalStack.from_settings(settings)


@local_app.command("up")
def local_up(
    home: HomeOption = None,
    kafka_port: Annotated[
        int | None, typer.Option(help="Kafka listener port (default: a free port).")
    ] = None,
    redis_port: Annotated[
        int | None, typer.Option(help="Redis port (default: a free port).")
    ] = None,
    registry_port: Annotated[
        int | None, typer.Option(help="Registry HTTP port (default: a free port).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print endpoints as JSON.")] = False,
) -> None:
    """Start local Kafka (KRaft), Redis and the registry unless already running; print
    their endpoints."""
    stack = _stack(home)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting local services", total=None)

        def on_download(files: int, size: int, name: str) -> None:
            progress.update(
                task,
                description=f"downloading Kafka jars: {files} files, {size / 1e6:.1f} MB ({name})",
            )

        def say(message: str) -> None:
            progress.console.print(message)
            progress.update(task, description="starting local services")

        endpoints = stack.up(kafka_port, redis_port, registry_port, progress=on_download, say=say)
    _print_endpoints(endpoints.as_dict(), as_json)


@local_app.command("down")
def local_down(home: HomeOption = None) -> None:
    """Stop the local services that `local up` started (data is kept for the next `up`)."""
    stopped = _stack(home).down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@local_app.command("status")
def local_status(
    home: HomeOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print endpoints as JSON.")] = False,
) -> None:
    """Show which local services run, where, and how much memory they use."""
    status = _stack(home).status()
    if as_json:
        _print_endpoints({n: s.endpoint for n, s in status.items() if s.endpoint}, True)
        return
    table = Table(
        *(
            Column(name, overflow="fold")
            for name in ("service", "state", "endpoint", "pid", "rss MB", "ready in s", "log")
        )
    )
    for s in status.values():
        table.add_row(
            s.name,
            "running" if s.running else "stopped",
            s.endpoint or "",
            str(s.pid or ""),
            str(s.rss_mb or ""),
            str(s.ready_seconds or ""),
            s.log or "",
        )
    Console().print(table)


@registry_app.command("serve")
def registry_serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8081,
    topic: Annotated[
        str | None,
        typer.Option(
            help="Compacted topic holding the schemas (default: $FEATURESTORE_REGISTRY_TOPIC)."
        ),
    ] = None,
    kafka_bootstrap: Annotated[
        str | None,
        typer.Option(
            help="Kafka to keep schemas in (default: $FEATURESTORE_KAFKA_BOOTSTRAP, else "
            "bootstrap.servers in $FEATURESTORE_KAFKA_CONFIG, else the local stack's)."
        ),
    ] = None,
) -> None:
    """Serve the schema registry over HTTP; its state lives in a Kafka topic."""
    import uvicorn

    from featurestore.contracts.registry import RegistryAuth, RegistryState, SchemaLog, create_app

    settings = Settings()
    if kafka_bootstrap is not None:
        settings = settings.model_copy(update={"kafka_bootstrap": kafka_bootstrap})
    kafka = _kafka_config(with_local_defaults(settings, needs=["kafka"]))

    state = RegistryState()
    log = SchemaLog(state, kafka["bootstrap.servers"], topic or settings.registry_topic, kafka)
    auth = RegistryAuth(
        settings.registry_token, settings.registry_user_info, settings.registry_protect_reads
    )
    uvicorn.run(create_app(state, log, auth), host=host, port=port, log_level="info")


def _registry_client(settings: Settings | None = None) -> RegistryClient:
    settings = settings or Settings()
    if settings.registry_url is None:
        settings = with_local_defaults(settings, needs=["registry"])
    if settings.registry_url is None:
        raise ConfigError(
            "no schema registry: set FEATURESTORE_REGISTRY_URL, or run `featurestore local up`."
        )
    return RegistryClient(
        settings.registry_url, settings.registry_user_info, settings.registry_token
    )


def _read_schema(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror}; give the path of an .avsc file."
        ) from exc


SubjectOption = Annotated[
    str, typer.Option("--subject", "-s", help="Subject, e.g. payments-value.")
]


@schemas_app.command("register")
def schemas_register(
    file: Annotated[Path, typer.Argument(help="Avro schema (.avsc) with contract metadata.")],
    subject: SubjectOption,
) -> None:
    """Register a contract under a subject (checked for validity and compatibility)."""
    result = _registry_client().register(subject, _read_schema(file))
    console.print(f"registered {subject} version {result['version']} (schema id {result['id']})")


@schemas_app.command("check")
def schemas_check(
    file: Annotated[Path, typer.Argument(help="Avro schema (.avsc) with contract metadata.")],
    subject: SubjectOption,
) -> None:
    """Dry run: may this contract be registered under the subject? Prints the reasons."""
    client = _registry_client()
    reasons = client.check(subject, _read_schema(file))
    level = client.compatibility_level(subject)
    if not reasons:
        console.print(f"[green]compatible[/green] with {subject} under {level}")
        return
    console.print(f"[red]incompatible[/red] with {subject} under {level}:")
    for reason in reasons:
        console.print(f"  - {reason}")
    raise typer.Exit(1)


@schemas_app.command("list")
def schemas_list() -> None:
    """Every subject with its latest version, schema id, entity and owner."""
    client = _registry_client()
    table = Table("subject", "version", "id", "entity", "event time", "owner")
    for subject in client.subjects():
        latest = client.version(subject)
        contract = parse_contract(latest["schema"])
        table.add_row(
            subject,
            str(latest["version"]),
            str(latest["id"]),
            ", ".join(contract.entity),
            contract.event_time or "",
            contract.owner or "",
        )
    Console().print(table)


@schemas_app.command("show")
def schemas_show(
    subject: Annotated[str, typer.Argument(help="Subject to show.")],
    version: Annotated[str, typer.Option(help="Version number or 'latest'.")] = "latest",
) -> None:
    """Print one registered schema version as JSON."""
    found = _registry_client().version(subject, version)
    console.print(f"{subject} version {found['version']} (schema id {found['id']})")
    sys.stdout.write(json.dumps(json.loads(found["schema"]), indent=2) + "\n")


def _kafka_config(
    settings: Settings | None = None,
    definition: Path | None = None,
    own: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """What every Kafka client the CLI builds gets: the settings of the properties file
    FEATURESTORE_KAFKA_CONFIG, and bootstrap.servers from FEATURESTORE_KAFKA_BOOTSTRAP
    (which wins over the file's), else from the local stack.

    The broker is asked once whether it accepts them, with a ``definition``'s ``own``
    [kafka] settings on top as its clients get them: refused credentials or a failed TLS
    handshake stop the command here, with what to fix."""
    settings = settings or with_local_defaults(Settings(), needs=["kafka"])
    if settings.kafka_bootstrap is None:
        raise ConfigError(
            "no Kafka: set FEATURESTORE_KAFKA_BOOTSTRAP (or bootstrap.servers in the file "
            "FEATURESTORE_KAFKA_CONFIG names), or run `featurestore local up`."
        )
    config = settings.kafka_client_config()
    where = (
        f"FEATURESTORE_KAFKA_CONFIG ({settings.kafka_config})"
        if settings.kafka_config
        else "a client properties file named by FEATURESTORE_KAFKA_CONFIG (none is set)"
    )
    if own:
        where += f" or the [kafka] table of {definition}"
    merged = {**config, **own} if own else config
    shown = ", ".join(f"{key}={value}" for key, value in redacted(merged).items())
    log.info("Kafka client settings (from %s): %s", where, shown)
    check_kafka_access(merged, where)
    return config


@app.command("run")
def run(
    definition: Annotated[
        Path, typer.Argument(help="Consumer definition, e.g. consumers/payments.")
    ],
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics here (overrides the file).")
    ] = None,
    instance_id: Annotated[
        str | None,
        typer.Option(
            envvar="FEATURESTORE_INSTANCE_ID",
            help="This process's stable name in its group (e.g. the pod name): a restart "
            "resumes at once instead of waiting for Kafka to expire the old member.",
        ),
    ] = None,
) -> None:
    """Run a consumer: enforce its contract on every event, dead-letter what breaks it,
    write valid events to the sinks. Stops cleanly on Ctrl-C or SIGTERM. Logs at
    $FEATURESTORE_LOG_LEVEL (default INFO)."""
    from featurestore.monitor.metrics import serve_metrics
    from featurestore.stream import ConsumerRuntime, load_definition

    logging.basicConfig(level=Settings().log_level, format="%(asctime)s %(levelname)s %(message)s")
    consumer = load_definition(definition)
    if instance_id is not None:
        consumer = consumer.model_copy(update={"instance_id": instance_id})
    online = consumer.sinks.online
    writes_online = bool(consumer.views) and online.enabled
    needs = ["kafka", "registry", *(["redis"] if writes_online and not online.redis_url else [])]
    settings = with_local_defaults(Settings(), needs=needs)
    store = None
    if writes_online:
        from featurestore.online import RedisOnlineStore, connect

        url = online.redis_url or settings.redis_url
        if url is None:
            raise ConfigError(
                "no Redis: set FEATURESTORE_REDIS_URL, or run `featurestore local up`."
            )
        store = RedisOnlineStore(connect(url, check=True), consumer.join_keys, online.prefix)
    runtime = ConsumerRuntime(
        consumer,
        _kafka_config(settings, definition, consumer.kafka),
        _registry_client(settings),
        consumer.sinks.offline.path or settings.offline_path,
        online=store,
    )
    serve_metrics(consumer.metrics_port if metrics_port is None else metrics_port,
                  runtime.probes)  # fmt: skip
    console.print(
        f"{consumer.name}: {', '.join(consumer.topics)} -> contract {consumer.subject} "
        f"v{runtime.contract_version}; dead letters to "
        f"{', '.join(consumer.dlq_for(t) for t in consumer.topics)}"
        + (
            f"; features: {', '.join(f'{v.name} v{v.version}' for v in consumer.views)}"
            if store
            else ""
        )
    )
    runtime.run()
    console.print(f"{consumer.name} stopped: {runtime.describe()}")


@app.command("history")
def history(  # noqa: PLR0917 - typer options
    entities: Annotated[
        Path, typer.Option(help="Parquet or CSV of join keys + a timestamp column per row.")
    ],
    features: Annotated[
        str,
        typer.Option(
            help="Comma-separated view:feature references, e.g. "
            "card_spend:amount_sum_1h,card_places:country_last_24h."
        ),
    ],
    output: Annotated[Path, typer.Option(help="Parquet file to write.")],
    definitions: Annotated[
        Path, typer.Option(help="Consumer definitions declaring the views (file or folder).")
    ] = Path("consumers"),
    timestamp_column: Annotated[
        str, typer.Option(help="The column holding each row's as-of time.")
    ] = "event_timestamp",
    offline_path: Annotated[
        str | None, typer.Option(help="Offline store root; default the settings'.")
    ] = None,
    full_feature_names: Annotated[
        bool, typer.Option(help="Name output columns view__feature.")
    ] = False,
) -> None:
    """Build a training set: each requested feature as of each row's own timestamp,
    recomputed from the validated events (point-in-time correct, rows kept in order)."""
    import polars as pl
    from rich.progress import BarColumn, MofNCompleteColumn

    from featurestore.offline.history import get_historical_features
    from featurestore.serving import Catalog

    catalog = Catalog.load(definitions)
    pinned = {
        f"{n}@{v}": view for n, known in catalog.versions.items() for v, view in known.items()
    }
    views, join_keys = catalog.views | pinned, catalog.join_keys
    settings = Settings()
    root = offline_path or settings.offline_path
    if root is None:
        raise ConfigError("no offline store: pass --offline-path or set FEATURESTORE_OFFLINE_PATH")
    registry = _registry_client(settings)
    event_time = {}
    for subject in {v.source for v in views.values()}:
        contract = parse_contract(registry.version(subject, "latest")["schema"])
        event_time[subject] = contract.event_time or ""
    reader = pl.read_csv if entities.suffix.lower() == ".csv" else pl.read_parquet
    rows = reader(entities, try_parse_dates=True) if reader is pl.read_csv else reader(entities)
    refs = [f.strip() for f in features.split(",") if f.strip()]
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn()]  # fmt: skip
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("rows", total=rows.height)
        result = get_historical_features(
            rows, refs, views=views, join_keys=join_keys, offline_root=root,
            timestamp_column=timestamp_column, event_time=event_time,
            full_feature_names=full_feature_names,
            progress=lambda n: progress.advance(task, n),
        )  # fmt: skip
    output.parent.mkdir(parents=True, exist_ok=True)
    result.write_parquet(output)
    console.print(f"wrote {result.height:,} rows x {len(refs)} features to {output}")


DefinitionsOption = Annotated[
    Path, typer.Option(help="Consumer definitions declaring the views (file or folder).")
]


@app.command("demo")
def demo(
    events: Annotated[int, typer.Option(min=100, help="Card payments to stream.")] = 100_000,
    rate: Annotated[
        float, typer.Option(min=0, help="Events per second (0: as fast as it goes).")
    ] = 0.0,
    cards: Annotated[int, typer.Option(min=10, help="Distinct cards.")] = 20_000,
    output: Annotated[Path, typer.Option(help="Where the training set and report go.")] = Path(
        "demo-output"
    ),
    keep: Annotated[bool, typer.Option(help="Leave the local services running.")] = False,
) -> None:
    """The whole product in one go: local Kafka, Redis and registry, the contract, the
    consumer and the feature server, a stream of card payments with bad events and a
    drift midway; then lookups, dead letters, alerts, a training set and a report."""
    from featurestore.demo import DemoOptions, run_demo

    logging.basicConfig(level=logging.ERROR)
    run_demo(DemoOptions(events, rate, keep, output, cards), Console())


@app.command("serve")
def serve(  # noqa: PLR0917 - typer options
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port (Feast's default).")] = 6566,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    definitions: DefinitionsOption = Path("consumers"),
    max_entities: Annotated[
        int | None, typer.Option(help="Most entity rows per request (default: settings, 1000).")
    ] = None,
    registry: Annotated[
        bool,
        typer.Option(
            "--registry/--no-registry",
            help="Also serve the schema registry API under /registry (one worker only; "
            "by default run it apart with `featurestore registry serve`).",
        ),
    ] = False,
) -> None:
    """Serve online features over HTTP: POST /features, GET /features/{view}/{key},
    GET /views, /healthz, /readyz, /metrics; OpenAPI docs at /docs. A bearer token is
    required when FEATURESTORE_SERVER_TOKEN is set."""
    import os
    import tempfile

    import uvicorn

    from featurestore.serving import Catalog
    from featurestore.serving.server import worker_environment

    if registry and workers > 1:
        raise ConfigError(
            "--registry serves the registry from one process: use --workers 1, or run the "
            "registry apart with `featurestore registry serve`"
        )
    catalog = Catalog.load(definitions)  # fails here, not in every worker
    needs = [*(["redis"] if catalog.redis_url is None else []), *(["kafka"] if registry else [])]
    settings = with_local_defaults(Settings(), needs=needs)
    if registry:
        _kafka_config(settings)  # refused credentials stop here, not in every worker
    env = {
        "FEATURESTORE_SERVE_DEFINITIONS": str(definitions.resolve()),
        "FEATURESTORE_SERVE_REGISTRY": "1" if registry else "0",
        **({"FEATURESTORE_REDIS_URL": settings.redis_url} if settings.redis_url else {}),
        **({"FEATURESTORE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or ""} if registry else {}),
        **({"FEATURESTORE_SERVER_MAX_ENTITIES": str(max_entities)} if max_entities else {}),
    }
    os.environ.update(env | worker_environment(workers))
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Every worker writes its metrics here and /metrics sums them.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fs-serve-metrics-")
    views = ", ".join(f"{v.name} v{v.version}" for v in catalog.views.values())
    console.print(f"serving {views or 'no views'} at http://{host}:{port} (docs: /docs)")
    uvicorn.run(
        "featurestore.serving.server:app_from_environment",
        factory=True, host=host, port=port, workers=workers, log_level="warning",
    )  # fmt: skip


@app.command("init")
def init(
    folder: Annotated[Path, typer.Argument(help="Where to write the project.")] = Path("."),
) -> None:
    """Write a new project: featurestore.toml, an example contract (schemas/) and a
    consumer with one feature view (consumers/), which `featurestore run` and `serve`
    accept as they are. Never overwrites a file."""
    from importlib.resources import as_file, files

    with as_file(files("featurestore").joinpath("templates/project")) as template:
        sources = sorted(p for p in template.rglob("*") if p.is_file())
        targets = [folder / p.relative_to(template) for p in sources]
        existing = [str(t) for t in targets if t.exists()]
        if existing:
            raise ConfigError(
                f"not writing a project over existing files: {', '.join(existing)}; "
                "choose an empty folder (`featurestore init <folder>`)"
            )
        for source, target in zip(sources, targets, strict=True):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    for target in targets:
        console.print(f"wrote {target}", markup=False)
    console.print(
        "next: featurestore local up; featurestore schemas register "
        "schemas/payment.v1.avsc --subject payments-value; featurestore plan; "
        "featurestore run payments; featurestore serve",
        markup=False,
    )


@app.command("plan")
def plan(
    definitions: DefinitionsOption = Path("consumers"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """What deploying these definitions would change, checked against Redis (each view
    version's stored layout) and the registry (each source's contract): new views and
    versions, and what would be refused, with the fix. Exits 1 when anything would be
    refused, so CI can run it before a deploy."""
    import json
    from dataclasses import asdict

    from featurestore import plan as planning
    from featurestore.cli_views import open_store
    from featurestore.serving import Catalog

    try:
        Catalog.load(definitions)  # a definition that does not load is the plan's refusal
    except ConfigError as exc:
        changes = [planning.refused_definitions(exc)]
    else:
        catalog, store = open_store(definitions)
        registry = _registry_client()

        def contract(subject: str) -> Any:
            try:
                return parse_contract(registry.version(subject, "latest")["schema"])
            except RegistryError as exc:
                if exc.status == 404:  # no such subject, or no version of it
                    return None
                raise

        def stored(keys: list[str]) -> list[Any]:
            return store.send([("HMGET", key, "values", "format") for key in keys])

        changes = planning.plan_views(catalog.versions, catalog.prefix, stored, contract)
    result = planning.summary(changes)
    if as_json:
        print(json.dumps({"changes": [asdict(c) for c in changes], **result}, indent=2))
    else:
        for change in changes:
            console.print(change.line(), markup=False, highlight=False)
        verdict = "nothing refused" if result["ok"] else f"{result['refused']} refused"
        console.print(f"{result['new']} new, {result['same']} unchanged, {verdict}",
                      markup=False)  # fmt: skip
    if not result["ok"]:
        raise typer.Exit(1)


@app.command("get")
def get(
    view: Annotated[str, typer.Argument(help="Feature view, e.g. card_spend.")],
    key: Annotated[
        str, typer.Argument(help="The entity's key (several join keys: comma-separated).")
    ],
    definitions: DefinitionsOption = Path("consumers"),
    version: Annotated[int | None, typer.Option(help="A version; default the served.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print one entity's features of one view, with status, freshness and version."""
    from featurestore.serving import FeatureClient

    catalog, store = open_store(definitions)
    client = FeatureClient(catalog, store)
    chosen = catalog.view(view, version)
    keys = catalog.entity_keys(chosen)
    parts = key.split(",") if len(keys) > 1 else [key]
    if len(parts) != len(keys):
        raise ConfigError(f"view {view!r} is keyed by {keys}: give {','.join(keys)} values")
    pin = f"@{version}" if version is not None else ""
    refs = [f"{chosen.name}{pin}:{f.name}" for f in chosen.features]
    found = client.get_online_features({k: [v] for k, v in zip(keys, parts, strict=True)}, refs)
    state = found.views[0]
    values = found.values.row(0, named=True)
    if as_json:
        print(json.dumps({"view": chosen.name, "version": state.version,
                          "status": state.status[0], "freshness_seconds": state.freshness_s[0],
                          "features": values}, default=str))  # fmt: skip
        return
    fresh = state.freshness_s[0]
    entity = ", ".join(f"{k}={v}" for k, v in zip(keys, parts, strict=True))
    newest = f", newest event {fresh:,.1f} s ago" if fresh is not None else ""
    out = Console()
    out.print(f"{chosen.name} v{state.version}  {entity}  status {state.status[0]}{newest}")
    table = Table("feature", Column("value", justify="right"))
    for name, value in values.items():
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        table.add_row(name, "null" if value is None else text)
    out.print(table)


@dlq_app.command("show")
def dlq_show(
    topic: Annotated[str, typer.Argument(help="Dead-letter topic, e.g. payments.dlq.")],
    reason: Annotated[str | None, typer.Option(help="Only this reason.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many records.")] = 20,
) -> None:
    """Show dead letters (source, reason, field, message) and counts by reason."""
    from featurestore.stream.dlq_tools import show

    letters, counts = show(_kafka_config(), topic, reason, limit)
    table = Table("dlq offset", "source", "reason", "field", "message", "replays")
    for letter in letters:
        table.add_row(
            f"{letter.dlq_partition}@{letter.dlq_offset}", letter.source, letter.reason,
            letter.field or "", letter.message, str(letter.replays),
        )  # fmt: skip
    Console().print(table)
    summary = ", ".join(f"{r}: {n:,}" for r, n in counts.most_common()) or "empty"
    Console().print(f"{sum(counts.values()):,} dead letters in {topic} ({summary})")


@dlq_app.command("replay")
def dlq_replay(
    topic: Annotated[str, typer.Argument(help="Dead-letter topic, e.g. payments.dlq.")],
    reason: Annotated[str | None, typer.Option(help="Only records of this reason.")] = None,
    max_replays: Annotated[
        int, typer.Option(help="Do not re-publish records replayed this often already.")
    ] = 3,
) -> None:
    """Re-publish dead letters to their source topics, after a contract fix."""
    from featurestore.stream.dlq_tools import replay

    report = replay(_kafka_config(), topic, reason, max_replays)
    done = ", ".join(f"{n:,} to {t}" for t, n in report.replayed.items()) or "nothing"
    console.print(f"replayed {done}; {report.exhausted:,} exhausted (replayed {max_replays}x)")


def _print_endpoints(endpoints: dict[str, str], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(endpoints) + "\n")
    else:
        for name, endpoint in endpoints.items():
            sys.stdout.write(f"{name}: {endpoint}\n")


def main() -> None:
    """Console entry point: run the app, turning our errors into clear messages."""
    try:
        app()
    except FeatureStoreError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()

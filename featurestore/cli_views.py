"""``featurestore views ...`` and ``featurestore backfill``: the feature view lifecycle
from the terminal (wiring only; the logic is `featurestore.online.lifecycle`,
`featurestore.stream.backfill` and `featurestore.online.compare`)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from featurestore.errors import ConfigError
from featurestore.local import with_local_defaults
from featurestore.settings import Settings

if TYPE_CHECKING:
    from featurestore.contracts import Contract
    from featurestore.online import RedisOnlineStore
    from featurestore.online.lifecycle import Lifecycle, ViewState
    from featurestore.serving import Catalog

views_app = typer.Typer(
    help="Feature view versions: list, shadow, compare, promote, roll back, retire.",
    no_args_is_help=True,
)
console = Console(stderr=True)
DefinitionsOption = Annotated[
    Path, typer.Option(help="Consumer definitions declaring the views (file or folder).")
]
VersionOption = Annotated[int, typer.Option("--version", "-v", help="The view version.")]
WhoOption = Annotated[str | None, typer.Option(help="Who acts, for the log (default: user@host).")]


def open_store(definitions: Path) -> tuple[Catalog, RedisOnlineStore]:
    """The definitions' catalog and a store on their Redis (the definitions' online
    sink, else $FEATURESTORE_REDIS_URL, else a running local stack's)."""
    from featurestore.online import RedisOnlineStore, connect
    from featurestore.serving import Catalog
    from featurestore.serving.client import timeouts

    catalog = Catalog.load(definitions)
    if catalog.redis_url is None:
        catalog.redis_url = with_local_defaults(Settings(), needs=["redis"], start=False).redis_url
    if catalog.redis_url is None:
        raise ConfigError("no Redis: set FEATURESTORE_REDIS_URL, or run `featurestore local up`.")
    client = connect(catalog.redis_url, check=True, **timeouts())
    return catalog, RedisOnlineStore(client, catalog.join_keys, catalog.prefix)


def offline_source(subject: str, offline_path: str | None) -> tuple[str, str]:
    """The offline store's root and the event-time field of ``subject``'s contract."""
    root, contract = offline_contract(subject, offline_path)
    if contract.event_time is None:
        raise ConfigError(f"the contract of {subject} has no event_time")
    return root, contract.event_time


def offline_contract(subject: str, offline_path: str | None) -> tuple[str, Contract]:
    """The offline store's root and ``subject``'s latest contract."""
    from featurestore.contracts import parse_contract
    from featurestore.contracts.registry.client import RegistryClient

    settings = with_local_defaults(Settings(), needs=["registry"], start=False)
    root = offline_path or settings.offline_path
    if root is None or settings.registry_url is None:
        raise ConfigError("this reads the offline store and the contract: pass "
                          "--offline-path and set FEATURESTORE_REGISTRY_URL, or run "
                          "`featurestore local up`")  # fmt: skip
    registry = RegistryClient(settings.registry_url, settings.registry_user_info,
                              settings.registry_token)  # fmt: skip
    return root, parse_contract(registry.version(subject, "latest")["schema"])


def epoch_ms(moment: datetime | None) -> int | None:
    """A naive time means UTC."""
    if moment is None:
        return None
    return int(moment.replace(tzinfo=moment.tzinfo or UTC).timestamp() * 1000)


def _lifecycle(definitions: Path) -> tuple[Catalog, RedisOnlineStore, Lifecycle]:
    from featurestore.online.lifecycle import Lifecycle

    catalog, store = open_store(definitions)
    return catalog, store, Lifecycle(store.client, store.prefix)


def _ago(ms: int | None) -> str:
    if ms is None:
        return "never"
    seconds = max(0.0, time.time() - ms / 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _say(view: str, state: ViewState) -> None:
    shadow = ", ".join(map(str, state.shadow)) or "none"
    console.print(f"{view}: active v{state.active}, shadow {shadow}, previous {state.previous}")


@views_app.command("list")
def views_list(definitions: DefinitionsOption = Path("consumers")) -> None:
    """Every view and version: its role, owner, and when it was last written."""
    catalog, _, lifecycle = _lifecycle(definitions)
    states = lifecycle.states()
    table = Table("view", Column("version", justify="right"), "role", "owner", "last write",
                  "backfilled", title="feature views")  # fmt: skip
    for name, versions in sorted(catalog.versions.items()):
        state = states.get(name)
        for number, view in sorted(versions.items()):
            info = lifecycle.version_info(name, number)
            role = state.role(number) if state is not None else "declared"
            table.add_row(name, str(number), role, view.owner, _ago(info["last_write"]),
                          "yes" if info["through"] else "no")  # fmt: skip
    Console().print(table)


@views_app.command("shadow")
def views_shadow(
    view: str, version: VersionOption, definitions: DefinitionsOption = Path("consumers"),
    who: WhoOption = None,
) -> None:  # fmt: skip
    """Compute VERSION beside the active one (served only when asked for by version)."""
    catalog, _, lifecycle = _lifecycle(definitions)
    catalog.view(view, version)  # declared, or a clear error
    if not lifecycle.version_info(view, version)["through"]:
        hint = f"featurestore backfill {view} --version {version}"
        console.print(f"note: {view} v{version} has no backfill: its windows fill up from "
                      f"now (run `{hint}` first)")  # fmt: skip
    _say(view, lifecycle.shadow(view, version, who))


@views_app.command("promote")
def views_promote(
    view: str, version: VersionOption, definitions: DefinitionsOption = Path("consumers"),
    who: WhoOption = None,
) -> None:  # fmt: skip
    """Serve VERSION to every client from their next lookup on."""
    catalog, _, lifecycle = _lifecycle(definitions)
    catalog.view(view, version)
    _say(view, lifecycle.promote(view, version, who))


@views_app.command("rollback")
def views_rollback(
    view: str, definitions: DefinitionsOption = Path("consumers"), who: WhoOption = None
) -> None:
    """Serve the previously active version again, at once (the current one goes into
    shadow)."""
    _, _, lifecycle = _lifecycle(definitions)
    _say(view, lifecycle.rollback(view, who))


@views_app.command("retire")
def views_retire(
    view: str, version: VersionOption, definitions: DefinitionsOption = Path("consumers"),
    who: WhoOption = None, batch: Annotated[int, typer.Option(help="Keys per UNLINK batch.")] = 500,
) -> None:  # fmt: skip
    """Stop computing VERSION and delete its keys in small batches."""
    _, _, lifecycle = _lifecycle(definitions)
    state = lifecycle.retire(view, version, who)
    deleted = 0
    with Progress(TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(f"deleting {view} v{version} keys")
        for count in lifecycle.delete_keys(view, version, batch):
            deleted += count
            bar.update(task, description=f"deleting {view} v{version} keys: {deleted:,}")
    console.print(f"retired {view} v{version}: {deleted:,} keys deleted")
    _say(view, state)


@views_app.command("log")
def views_log(
    view: Annotated[str | None, typer.Argument(help="Only this view.")] = None,
    definitions: DefinitionsOption = Path("consumers"),
    limit: Annotated[int, typer.Option(help="At most this many events.")] = 20,
) -> None:
    """Who promoted, shadowed, rolled back or retired what, and when (newest first)."""
    _, _, lifecycle = _lifecycle(definitions)
    table = Table("at (UTC)", "view", "action", Column("version", justify="right"),
                  "active before -> after", "who")  # fmt: skip
    for event in lifecycle.history(view, limit):
        at = datetime.fromtimestamp(event["at"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        switch = f"{event['active_before']} -> {event['active_after']}"
        table.add_row(at, event["view"], event["action"], str(event["version"]), switch,
                      event["who"])  # fmt: skip
    Console().print(table)


@views_app.command("compare")
def views_compare(
    view: str,
    versions: Annotated[tuple[int, int], typer.Option(help="The two versions, e.g. 1 2.")],
    definitions: DefinitionsOption = Path("consumers"),
    sample: Annotated[int, typer.Option(help="Live entities to compare.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """How two versions differ on live entities, feature by feature."""
    from featurestore.online.compare import compare_versions, sample_entities

    catalog, store = open_store(definitions)
    a, b = (catalog.view(view, v) for v in versions)
    entities = sample_entities(store, a, catalog.entity_keys(a), sample)
    at = time.time_ns() // 1_000_000
    found = compare_versions(store, a, b, entities, at)
    if as_json:
        print(json.dumps([{"feature": d.feature, "entities": d.entities, "differ": d.differ,
                           "share": d.share, "abs_diff": d.abs_diff} for d in found]))  # fmt: skip
        return
    table = Table("feature", Column("entities", justify="right"),
                  Column("differ", justify="right"), Column("share", justify="right"),
                  *(Column(f"|diff| {q}", justify="right") for q in ("p50", "p90", "p99", "max")),
                  title=f"{view} v{versions[0]} vs v{versions[1]}")  # fmt: skip
    for d in found:
        cells = ["-" if v is None else f"{v:.6g}" for v in d.abs_diff.values()]
        table.add_row(d.feature, f"{d.entities:,}", f"{d.differ:,}", f"{d.share:.1%}", *cells)
    Console().print(table)
    if not found:
        console.print(f"nothing to compare: no live entities in {view} v{versions[0]}, or no "
                      "feature the two versions share")  # fmt: skip


def backfill(  # noqa: PLR0917 - typer options
    view: Annotated[str, typer.Argument(help="Feature view, e.g. card_spend.")],
    version: VersionOption,
    start: Annotated[
        datetime | None, typer.Option("--from", help="Only events at or after (UTC).")
    ] = None,
    end: Annotated[
        datetime | None, typer.Option("--to", help="Only events at or before (UTC).")
    ] = None,
    definitions: DefinitionsOption = Path("consumers"),
    offline_path: Annotated[
        str | None, typer.Option(help="Offline store root; default the settings'.")
    ] = None,
) -> None:
    """Build VERSION's online state from the offline events with the one window engine;
    the consumer then continues it from the stream (shadow or promote it)."""
    from featurestore.stream.backfill import backfill as run_backfill

    catalog, store = open_store(definitions)
    chosen = catalog.view(view, version)
    root, event_time = offline_source(chosen.source, offline_path)
    ms = [epoch_ms(start), epoch_ms(end)]
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn()]  # fmt: skip
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(f"backfilling {view} v{version}, day by day", total=None)
        report = run_backfill(store, chosen, offline_root=root, event_time=event_time,
                              start=ms[0], end=ms[1],
                              progress=lambda done, days: bar.update(task, completed=done,
                                                                      total=days))  # fmt: skip
    reach = ", ".join(f"{t}:{p} <= {o}" for (t, p), o in sorted(report.through.items()))
    console.print(f"backfilled {view} v{version}: {report.events:,} events over {report.days} "
                  f"days in {report.seconds:.1f} s; through offsets {reach or 'none'}. Next: "
                  f"`featurestore views shadow {view} --version {version}`")  # fmt: skip

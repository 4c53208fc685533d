"""``featurestore monitor ...`` and ``featurestore audit ...``: baselines, drift reports
and the online/offline skew audit (wiring only; the logic is in `featurestore.monitor`)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Column, Table

from featurestore.cli_views import (
    DefinitionsOption,
    epoch_ms,
    offline_contract,
    offline_source,
    open_store,
)
from featurestore.errors import ConfigError

monitor_app = typer.Typer(help="Drift baselines and reports.", no_args_is_help=True)
audit_app = typer.Typer(help="Audits of what is served.", no_args_is_help=True)
console = Console(stderr=True)
VersionOption = Annotated[
    int | None, typer.Option("--version", "-v", help="The view version; default the served.")
]
OfflineOption = Annotated[
    str | None, typer.Option(help="Offline store root; default the settings'.")
]


@monitor_app.command("baseline")
def monitor_baseline(  # noqa: PLR0917 - typer options
    view: Annotated[str, typer.Argument(help="Feature view, e.g. card_spend.")],
    start: Annotated[datetime, typer.Option("--from", help="Start of the training period (UTC).")],
    end: Annotated[datetime, typer.Option("--to", help="End of the training period (UTC).")],
    version: VersionOption = None,
    sample: Annotated[int, typer.Option(help="Events sampled as baseline rows.")] = 20_000,
    definitions: DefinitionsOption = Path("consumers"),
    offline_path: OfflineOption = None,
) -> None:
    """Profile every feature and input of a view version over a training period, and
    store it with the version: the consumer's drift checks compare against it. The
    contract's pii fields are profiled by their null rate only."""
    from featurestore.monitor.baseline import build_baseline

    catalog, store = open_store(definitions)
    chosen = catalog.view(view, version)
    root, contract = offline_contract(chosen.source, offline_path)
    if contract.event_time is None:
        raise ConfigError(f"the contract of {chosen.source} has no event_time")
    event_time = contract.event_time
    first, last = epoch_ms(start), epoch_ms(end)
    assert first is not None
    assert last is not None
    with console.status(f"profiling {view} v{chosen.version} from the offline store"):
        baseline = build_baseline(chosen, join_keys=catalog.entity_keys(chosen),
                                  offline_root=root, event_time=event_time, start=first,
                                  end=last, pii=contract.pii_fields, sample=sample)  # fmt: skip
    baseline.save(store.client, store.prefix)
    console.print(f"baseline of {view} v{chosen.version}: {baseline.rows:,} rows, "
                  f"{len(baseline.features)} features, {len(baseline.inputs)} inputs; the "
                  "consumer checks drift against it from its next check")  # fmt: skip


@monitor_app.command("report")
def monitor_report(
    view: Annotated[str, typer.Argument(help="Feature view, e.g. card_spend.")],
    version: VersionOption = None,
    output: Annotated[Path, typer.Option(help="The HTML report to write.")] = Path(
        "drift-report.html"
    ),
    definitions: DefinitionsOption = Path("consumers"),
) -> None:
    """Drift of a view version against its baseline: a table here, charts in HTML."""
    from featurestore.monitor.drift import CURRENT, Baseline
    from featurestore.monitor.report import render_html, rows
    from featurestore.online.layout import meta_key

    catalog, store = open_store(definitions)
    chosen = catalog.view(view, version)
    baseline = Baseline.load(store.client, store.prefix, chosen.name, chosen.version)
    if baseline is None:
        raise ConfigError(f"{view} v{chosen.version} has no baseline: run `featurestore "
                          f"monitor baseline {view} --from ... --to ...` first")  # fmt: skip
    raw = store.client.hget(meta_key(store.prefix, chosen.name, chosen.version), CURRENT)
    current = json.loads(raw) if raw else None
    table = Table("feature / input", "kind", Column("values", justify="right"),
                  *(Column(s, justify="right") for s in ("psi", "ks", "js", "null rate +")),
                  "drifted", title=f"{view} v{chosen.version} against its baseline")  # fmt: skip
    for row in rows(chosen, baseline, current):
        cells = [f"{row.stats[s]:.3f}" if s in row.stats else "-"
                 for s in ("psi", "ks", "js", "null_rate")]  # fmt: skip
        table.add_row(row.name, row.kind, f"{row.count:,}", *cells, ", ".join(row.breached))
    Console().print(table)
    output.write_text(render_html(chosen, baseline, current))
    age = "" if current is None else f" (current window checked {_ago(current['at'])})"
    console.print(f"wrote {output}{age}")


@audit_app.command("skew")
def audit_skew(  # noqa: PLR0917 - typer options
    view: Annotated[str, typer.Argument(help="Feature view, e.g. card_spend.")],
    sample: Annotated[int, typer.Option(help="Live entities to audit.")] = 200,
    version: VersionOption = None,
    at: Annotated[datetime | None, typer.Option(help="Audit time (UTC); default now.")] = None,
    definitions: DefinitionsOption = Path("consumers"),
    offline_path: OfflineOption = None,
) -> None:
    """Online values against the offline recomputation, for sampled live entities."""
    from featurestore.monitor.skew import audit_skew as run_audit

    catalog, store = open_store(definitions)
    chosen = catalog.view(view, version)
    root, event_time = offline_source(chosen.source, offline_path)
    moment = epoch_ms(at) or time.time_ns() // 1_000_000
    report = run_audit(store, chosen, join_keys=catalog.entity_keys(chosen), offline_root=root,
                       event_time=event_time, at=moment, sample=sample)  # fmt: skip
    when = datetime.fromtimestamp(moment / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    title = f"{view} v{chosen.version}: {report.entities} entities at {when} UTC"
    table = Table("feature", Column("mismatches", justify="right"), title=title)
    for f in chosen.features:
        table.add_row(f.name, str(report.mismatches.get(f.name, 0)))
    Console().print(table)
    for example in report.examples[:5]:
        console.print(f"e.g. {example}")
    console.print(f"{report.total} mismatches in {report.entities * len(chosen.features):,} "
                  "values")  # fmt: skip
    if report.total:
        raise typer.Exit(1)


def _ago(ms: int) -> str:
    return f"{max(0.0, time.time() - ms / 1000):.0f} s ago"

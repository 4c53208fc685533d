"""``featurestore``: the command line. It wires the packages together; no logic of its
own lives here beyond parsing flags and printing results.

Every FeatureStoreError is printed as its message (which says what to do next) and
exits with status 1, without a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from featurestore.errors import FeatureStoreError
from featurestore.local import LocalStack
from featurestore.settings import Settings

app = typer.Typer(
    help="Streaming feature store and online validator: Avro contracts on Kafka, "
    "windowed features in Redis and Parquet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
local_app = typer.Typer(
    help="Local Kafka and Redis for development (real processes, cached under the user's "
    "cache dir).",
    no_args_is_help=True,
)
app.add_typer(local_app, name="local")

console = Console(stderr=True)

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
    as_json: Annotated[bool, typer.Option("--json", help="Print endpoints as JSON.")] = False,
) -> None:
    """Start local Kafka (KRaft) and Redis unless already running; print their endpoints."""
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

        endpoints = stack.up(kafka_port, redis_port, progress=on_download, say=say)
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
    table = Table("service", "state", "endpoint", "pid", "rss MB", "ready in s", "log")
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

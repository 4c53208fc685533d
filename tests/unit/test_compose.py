"""docker-compose.yml cannot be run here (no Docker engine), so its featurestore
commands are checked against the CLI itself: each parses as `featurestore` would parse
it, and every file it names exists in the image's build context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from typer.core import TyperCommand, TyperGroup

from featurestore.cli import app

ROOT = Path(__file__).parents[2]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def featurestore_services() -> dict[str, list[str]]:
    return {name: service["command"] for name, service in compose()["services"].items()
            if service.get("image") == "featurestore:local"}  # fmt: skip


def test_the_whole_product_is_composed() -> None:
    services = compose()["services"]
    assert {"kafka", "redis", "registry", "register-contracts", "consumer",
            "feature-server"} <= set(services)  # fmt: skip
    assert set(featurestore_services()) == {"registry", "register-contracts", "consumer",
                                            "feature-server"}  # fmt: skip
    assert (ROOT / "Dockerfile").is_file()


@pytest.mark.parametrize("name", sorted(featurestore_services()))
def test_each_command_parses_as_the_cli_would(name: str) -> None:
    command = featurestore_services()[name]
    cli: Any = typer.main.get_command(app)  # typer bundles its own click
    words, parent = list(command), cli.context_class(cli, info_name="featurestore")
    while isinstance(cli, TyperGroup):
        found = cli.get_command(parent, words[0])
        assert found is not None, f"{name}: no command {words[0]!r} in {command}"
        parent = cli.context_class(found, info_name=words.pop(0), parent=parent)
        cli = found
    assert isinstance(cli, TyperCommand)
    cli.make_context(parent.info_name, words, parent=parent.parent)  # parses, or raises
    for value in command:
        if value.startswith(("schemas/", "consumers")):
            candidates = [ROOT / value, ROOT / f"{value}.toml"]
            assert any(p.exists() for p in candidates), f"{name}: {value} is not in the repo"


def test_the_dashboard_queries_only_metrics_featurestore_exports() -> None:
    """Every metric a Grafana panel queries is one the consumer or server registers, so
    renaming a metric breaks this test instead of the dashboard."""
    import json
    import re

    from prometheus_client import REGISTRY

    import featurestore.monitor.alerts
    import featurestore.monitor.metrics
    import featurestore.serving.server  # noqa: F401 - they register the metrics

    exported = {m.name for m in REGISTRY.collect()}
    dashboard = json.loads((ROOT / "docs/monitoring/grafana/dashboards/featurestore.json")
                           .read_text())  # fmt: skip
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"featurestore_[a-z_]+", target["expr"])}  # fmt: skip
    assert len(queried) >= 12
    for name in queried:
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert base in exported, f"the dashboard queries {name}, which nothing exports"
    services = compose()["services"]
    assert {"prometheus", "grafana"} <= set(services)
    for volume in services["prometheus"]["volumes"] + services["grafana"]["volumes"]:
        assert (ROOT / volume.split(":")[0]).exists(), volume


def test_the_image_installs_the_lock_and_runs_unprivileged() -> None:
    """The image installs exactly uv.lock (through the hash-pinned uv), never resolves
    anew, and its services do not run as root."""
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    syncs = [line for line in lines if " uv sync " in f" {line} "]
    assert syncs, "the Dockerfile installs its dependencies with uv sync"
    assert all("--locked" in line for line in syncs)
    assert not [line for line in lines if "pip install" in line and "--require-hashes" not in line]
    assert any(line.startswith("COPY ") and "uv.lock" in line for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "the image names a user"
    assert users[-1] not in {"root", "0"}
    assert all(service.get("build") == "." for name, service in compose()["services"].items()
               if name in featurestore_services())  # fmt: skip

"""``featurestore plan`` against real Redis and a real registry: new views
and versions are announced, and every refusal (no contract, a field the contract lacks,
a sum of text, a changed layout, a feature service naming a missing feature) is named
with its fix and exits 1, so CI can gate a deploy on it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from featurestore.cli import app
from featurestore.contracts.registry.client import RegistryClient
from featurestore.online import RedisOnlineStore, connect
from featurestore.serving import Catalog
from tests.conftest import Services
from tests.integration.registry.conftest import RunningRegistry

pytestmark = pytest.mark.integration
SCHEMA = (Path(__file__).parents[3] / "schemas" / "card_payment.v1.avsc").read_text()

DEFINITION = """
name = "plan"
topics = ["plan"]
subject = "{subject}"

[sinks.online]
prefix = "{prefix}"
redis_url = "{redis_url}"

[[entities]]
name = "card"
join_keys = ["card_id"]

[[views]]
name = "card_spend"
source = "{subject}"
entity = "card"
owner = "o@example.com"

[[views.aggregations]]
column = "amount"
functions = ["{function}"]
windows = ["1h"]
{extra}
"""


def plan(folder: Path, registry: RunningRegistry) -> tuple[int, dict[str, Any]]:
    """The command in this process (its start-up is the CLI's, not what is tested)."""
    done = CliRunner().invoke(app, ["plan", "--definitions", str(folder), "--json"],
                              env={"FEATURESTORE_REGISTRY_URL": registry.url})  # fmt: skip
    assert done.exception is None or isinstance(done.exception, SystemExit), done.output
    return done.exit_code, json.loads(done.stdout)


def found(result: dict[str, Any], kind: str) -> list[str]:
    return [f"{c['subject']}: {c['detail']}" for c in result["changes"] if c["kind"] == kind]


def test_plan_announces_new_versions_and_names_every_refusal(
    services: Services, registry: RunningRegistry, redis_prefix: str, tmp_path: Path
) -> None:
    subject = f"plan-{uuid.uuid4().hex[:8]}-value"
    folder = tmp_path / "defs"
    folder.mkdir()

    def write(function: str = "sum", extra: str = "") -> None:
        (folder / "plan.toml").write_text(DEFINITION.format(
            subject=subject, prefix=redis_prefix.rstrip(":"), redis_url=services.redis_url,
            function=function, extra=extra))  # fmt: skip

    write()
    code, result = plan(folder, registry)
    assert code == 1
    assert found(result, "new") == ["card_spend v1: a new view"]
    assert any("no contract registered" in line for line in found(result, "refused"))

    RegistryClient(registry.url).register(subject, SCHEMA)
    code, result = plan(folder, registry)
    assert (code, result["ok"], result["refused"]) == (0, True, 0)

    catalog = Catalog.load(folder)
    store = RedisOnlineStore(connect(services.redis_url), catalog.join_keys, catalog.prefix)
    store.register(catalog.views["card_spend"], set())  # what a consumer's first write does
    code, result = plan(folder, registry)
    assert code == 0
    assert found(result, "same") == ["card_spend v1: already written with this layout"]

    second = """
[[views]]
name = "card_spend"
version = 2
source = "{subject}"
entity = "card"
owner = "o@example.com"

[[views.aggregations]]
column = "{column}"
functions = ["{function}"]
windows = ["1h"]
"""
    write("max", second.format(subject=subject, column="country", function="sum")
          + second.replace("version = 2", "version = 3").format(
              subject=subject, column="nope", function="count"))  # fmt: skip
    code, result = plan(folder, registry)
    assert code == 1
    assert found(result, "new") == [
        "card_spend v2: a new version of a view already served",
        "card_spend v3: a new version of a view already served",
    ]
    refused = "\n".join(found(result, "refused"))
    assert "card_spend v1: its columns or aggregations changed" in refused
    assert "bump `version`" in refused
    assert "card_spend v2: it takes the sum of 'country'" in refused
    assert "card_spend v3: it aggregates field 'nope'" in refused

    write(extra='\n[[feature_services]]\nname = "model"\nfeatures = ["card_spend:nope_1h"]\n')
    code, result = plan(folder, registry)
    assert code == 1
    assert result["changes"][0]["subject"] == "definitions"
    assert "feature service 'model'" in result["changes"][0]["detail"]


def test_a_project_from_init_plans_clean(
    services: Services, registry: RunningRegistry, redis_prefix: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`featurestore init` writes a project whose contract registers and whose
    definitions plan with nothing refused, from inside the project (no flags)."""
    env = {"FEATURESTORE_REGISTRY_URL": registry.url, "FEATURESTORE_REDIS_URL": services.redis_url}
    runner = CliRunner()
    done = runner.invoke(app, ["init", str(tmp_path / "shop")], env=env)
    assert done.exit_code == 0, done.output
    again = runner.invoke(app, ["init", str(tmp_path / "shop")], env=env)
    assert again.exit_code != 0
    assert "not writing a project over existing files" in str(again.exception)
    consumer = tmp_path / "shop" / "consumers" / "payments.toml"
    assert (tmp_path / "shop" / "featurestore.toml").is_file()
    # This Redis is shared with other tests: the project's own key prefix.
    own = f'prefix = "{redis_prefix.rstrip(":")}"'
    consumer.write_text(consumer.read_text().replace('prefix = "fs"', own))
    monkeypatch.chdir(tmp_path / "shop" / "consumers")
    subject = f"init-{uuid.uuid4().hex[:8]}-value"
    consumer.write_text(consumer.read_text().replace("payments-value", subject))
    done = runner.invoke(app, ["schemas", "register", "../schemas/payment.v1.avsc", "--subject",
                               subject], env=env)  # fmt: skip
    assert done.exit_code == 0, done.output
    done = runner.invoke(app, ["plan", "--json"], env=env)
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert found(result, "new") == ["card_spend v1: a new view"]
    assert result["refused"] == 0

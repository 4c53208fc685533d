"""`featurestore schemas ...` against a live registry, as a producer team uses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.registry.conftest import RunningRegistry

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).parents[3] / "schemas"


def _cli(registry: RunningRegistry, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FEATURESTORE_REGISTRY_URL": registry.url, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "featurestore.cli", "schemas", *args],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip


def test_register_check_list_show(registry: RunningRegistry) -> None:
    v1, v2, v3 = (str(SCHEMAS / f"card_payment.v{n}.avsc") for n in (1, 2, 3))
    done = _cli(registry, "register", v1, "--subject", "payments-value")
    assert done.returncode == 0, done.stderr
    assert "registered payments-value version 1 (schema id 1)" in done.stderr

    ok = _cli(registry, "check", v2, "--subject", "payments-value")
    assert ok.returncode == 0, ok.stderr
    assert "compatible with payments-value under BACKWARD" in ok.stderr

    bad = _cli(registry, "check", v3, "--subject", "payments-value")
    assert bad.returncode == 1
    assert "incompatible" in bad.stderr
    assert "risk_score" in bad.stderr

    refused = _cli(registry, "register", v3, "--subject", "payments-value")
    assert refused.returncode == 1
    assert "incompatible with an earlier schema" in refused.stderr
    assert "Traceback" not in refused.stderr

    listed = _cli(registry, "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "payments-value" in line)
    for cell in ("card_id", "ts", "payments-team@example.com"):
        assert cell in row

    shown = _cli(registry, "show", "payments-value", "--version", "1")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["name"] == "CardPayment"


def test_clear_errors_for_bad_files_and_unknown_subjects(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    missing = _cli(registry, "register", str(tmp_path / "nope.avsc"), "--subject", "x-value")
    assert missing.returncode == 1
    assert "cannot read" in missing.stderr

    broken = tmp_path / "broken.avsc"
    broken.write_text(
        json.dumps(
            {
                "type": "record",
                "name": "Broken",
                "featurestore": {"entity": ["card_id"]},
                "fields": [{"name": "amount", "type": "double"}],
            }
        )
    )
    invalid = _cli(registry, "register", str(broken), "--subject", "x-value")
    assert invalid.returncode == 1
    assert "card_id" in invalid.stderr

    unknown = _cli(registry, "show", "never-registered")
    assert unknown.returncode == 1
    assert "never-registered" in unknown.stderr

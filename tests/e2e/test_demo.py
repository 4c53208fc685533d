"""`make demo` as a newcomer runs it: in a fresh clone, with nothing installed there
yet (the Makefile makes the virtualenv; pip's and the jars' caches are shared), a small
stream; its output shows every part of the story and it stops what it started."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


@pytest.mark.timeout(900)
def test_make_demo_in_a_fresh_clone(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs the repository's git history to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_")}
    env |= {"COLUMNS": "120", "TERM": "dumb"}
    done = subprocess.run(
        ["make", "demo", 'ARGS=--events 3000 --cards 400'], cwd=clone, env=env,
        capture_output=True, text=True, timeout=840, check=False,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    for words in ("local services up", "registered (schema id", "streaming 3,000 card payments",
                  "baseline of card_spend v1", "lookups over HTTP", "dead letters of 3,000",
                  "CONSTRAINT_VIOLATION", "point-in-time training set", "where to look next",
                  "demo done"):  # fmt: skip
        assert words in out, f"{words!r} missing from the demo's output:\n{out[-4000:]}"
    flat = re.sub(r"\s+", " ", out)  # the terminal may wrap a long alert line anywhere
    assert re.search(r"firing drift card_spend v1 input amount: psi [0-9.]+ > 0\.2 .*?owner "
                     r"payments-team@example\.com", flat), out[-4000:]  # fmt: skip
    assert (clone / "demo-output" / "training.parquet").exists()
    assert "data:image/png;base64," in (clone / "demo-output" / "drift-report.html").read_text()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    status = subprocess.run(
        [str(clone / ".venv/bin/featurestore"), "local", "status", "--json", "--home",
         str(cache / "featurestore" / "demo")],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == {}, status.stdout  # it stopped what it started

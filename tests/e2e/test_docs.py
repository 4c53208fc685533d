"""The user guides in docs/guides cannot rot: every shell and Python block in them runs
here, in order, against real Kafka, Redis and a registry, as a reader would type it.

A block may be annotated just above its fence: ``<!-- doc-test: fails -->`` (it must
exit non-zero, as the docs say), ``<!-- doc-test: background N -->`` (a long-running
command: started, alive N seconds later, left running for the blocks after it, stopped
at the end of its guide; ``background N until-log TEXT`` or ``until-http URL`` moves on
as soon as its output holds TEXT or URL answers 200). JSON blocks are shown, not run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import Services
from tests.integration.registry.conftest import RunningRegistry

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
GUIDES = ["producers", "operators", "serving", "data-scientists", "from-feast"]  # a story, in order
FENCE = re.compile(r"(?:<!-- doc-test: (?P<note>[^>]*) -->\n)?```(?P<lang>\w+)\n(?P<code>.*?)```",
                   re.DOTALL)  # fmt: skip


@dataclass(frozen=True)
class Block:
    where: str
    lang: str
    code: str
    note: str


def blocks(guide: str) -> list[Block]:
    text = (ROOT / "docs" / "guides" / f"{guide}.md").read_text()
    out = []
    for match in FENCE.finditer(text):
        line = text[: match.start("code")].count("\n")
        out.append(Block(f"docs/guides/{guide}.md:{line}", match["lang"], match["code"],
                         (match["note"] or "").strip()))  # fmt: skip
    return out


def test_every_guide_has_runnable_blocks() -> None:
    for guide in GUIDES:
        runnable = [b for b in blocks(guide) if b.lang in ("sh", "python")]
        assert len(runnable) >= 2, guide


def start_in_background(
    block: Block, command: list[str], cwd: Path, env: dict[str, str]
) -> subprocess.Popen[str]:
    """Start a long-running block and wait until it is ready: ``background N`` waits N
    seconds; ``background N until-log TEXT`` until its output holds TEXT, ``background N
    until-http URL`` until URL answers 200, each at most N seconds."""
    seconds, *until = block.note.split(maxsplit=3)[1:]
    log = cwd / f"background-{block.where.rsplit(':', 1)[1]}.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, text=True, stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline and not (until and ready(until, log)):
        assert process.poll() is None, f"{block.where} stopped early:\n{log.read_text()[-3000:]}"
        time.sleep(0.25)
    assert process.poll() is None, f"{block.where} stopped early:\n{log.read_text()[-3000:]}"
    return process


def ready(until: list[str], log: Path) -> bool:
    kind, what = until
    if kind == "until-log":
        return what.strip('"') in log.read_text()
    assert kind == "until-http", kind
    try:
        return httpx.get(what, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.timeout(600)
def test_the_guides_run_as_written(
    services: Services, registry: RunningRegistry, tmp_path: Path
) -> None:
    shutil.copytree(ROOT / "schemas", tmp_path / "schemas")
    (tmp_path / "consumers").mkdir()
    shutil.copy(ROOT / "consumers" / "payments.toml", tmp_path / "consumers")
    client = redis.Redis.from_url(services.redis_url)
    stale = list(client.scan_iter(match="fs:*", count=1000))
    if stale:
        client.unlink(*stale)  # the guides use the example's own prefix
    env = {
        **os.environ,
        "FEATURESTORE_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "FEATURESTORE_REDIS_URL": services.redis_url,
        "FEATURESTORE_REGISTRY_URL": registry.url,
        "FEATURESTORE_OFFLINE_PATH": str(tmp_path / "offline"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "COLUMNS": "120",
    }
    for guide in GUIDES:
        running: list[tuple[Block, subprocess.Popen[str]]] = []
        try:
            for block in blocks(guide):
                if block.lang == "sh":
                    command = ["bash", "-eo", "pipefail", "-c", block.code]
                elif block.lang == "python":
                    command = [sys.executable, "-c", block.code]
                else:
                    continue
                if block.note.startswith("background"):
                    running.append((block, start_in_background(block, command, tmp_path, env)))
                    continue
                done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True,
                                      text=True, timeout=240, check=False)  # fmt: skip
                output = f"{block.where}:\n{block.code}\n--- output ---\n{done.stdout}{done.stderr}"
                if block.note == "fails":
                    assert done.returncode != 0, output
                    assert "Traceback" not in done.stderr, output
                else:
                    assert done.returncode == 0, output
        finally:
            for block, process in running:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    pytest.fail(f"{block.where} did not stop on SIGTERM")
    assert (tmp_path / "train.parquet").exists()
    assert (tmp_path / "drift-report.html").exists()

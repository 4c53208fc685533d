"""The contract registry as a local service: ``featurestore registry serve`` in its own
process, on the local Kafka. Ready means it answered ``GET /subjects``, which it does
only after reading its whole schema topic.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from featurestore.local.process import ProcessRecord, spawn, wait_until_ready


def start_registry(home: Path, port: int, kafka: str) -> ProcessRecord:
    home.mkdir(parents=True, exist_ok=True)
    args = ["registry", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd = [sys.executable, "-m", "featurestore.cli", *args, "--kafka-bootstrap", kafka]
    return spawn(cmd, home / "registry.log", cwd=home, marker=" ".join(args))


def wait_for_registry(url: str, record: ProcessRecord | None, timeout: float = 60.0) -> float:
    """Block until the registry answers ``GET /subjects``; returns seconds waited."""
    return wait_until_ready(
        f"the registry at {url}",
        lambda: httpx.get(f"{url}/subjects", timeout=1.0).status_code == 200,
        record,
        timeout,
        "did not answer GET /subjects",
    )

"""The contract registry as a local service: ``featurestore registry serve`` in its own
process, on the local Kafka. Ready means it answered ``GET /subjects``, which it does
only after reading its whole schema topic.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

from featurestore.errors import LocalServiceError
from featurestore.local.process import ProcessRecord, is_running, log_tail, spawn


def start_registry(home: Path, port: int, kafka: str) -> ProcessRecord:
    home.mkdir(parents=True, exist_ok=True)
    args = ["registry", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd = [sys.executable, "-m", "featurestore.cli", *args, "--kafka-bootstrap", kafka]
    return spawn(cmd, home / "registry.log", cwd=home, marker=" ".join(args))


def wait_for_registry(url: str, record: ProcessRecord | None, timeout: float = 60.0) -> float:
    """Block until the registry answers ``GET /subjects``; returns seconds waited."""
    started = time.monotonic()
    while True:
        if record is not None and not is_running(record):
            raise LocalServiceError(
                f"the registry exited while starting; last lines of {record.log}:\n"
                f"{log_tail(record.log)}"
            )
        try:
            if httpx.get(f"{url}/subjects", timeout=1.0).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        if time.monotonic() - started > timeout:
            raise LocalServiceError(f"the registry at {url} did not answer within {timeout:.0f}s.")
        time.sleep(0.1)

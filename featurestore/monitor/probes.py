"""What a consumer tells an orchestrator's probes, on its metrics port.

- ``/healthz`` (liveness): the consume loop turned within ``stall_s`` (waiting on a
  dependency counts as turning: a restart would not bring Redis or the broker back).
  503 means the loop is stuck and a restart may help.
- ``/readyz`` (readiness): live, started, and not waiting on a dependency. 503 names
  what it waits for (the contract, Redis, the broker, ...).

Both answer ``text/plain`` with the reason, so ``curl`` says why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

STALL_S = 120.0  # a loop quiet for longer is stuck: no batch, no wait, no poll


class Probes:
    """The consume loop's heartbeat and what it waits for (thread-safe enough: single
    assignments read by the probe server's thread)."""

    def __init__(self, stall_s: float = STALL_S, clock: Callable[[], float] = time.monotonic):
        self.stall_s, self.clock = stall_s, clock
        self._beat = clock()
        self._waiting: str | None = "starting"
        self._lock = threading.Lock()

    def beat(self) -> None:
        self._beat = self.clock()

    def waiting(self, what: str | None) -> None:
        """The loop waits for ``what`` (None: it is consuming)."""
        with self._lock:
            self._waiting = what
        self.beat()

    @property
    def waiting_for(self) -> str | None:
        with self._lock:
            return self._waiting

    def live(self) -> tuple[bool, str]:
        quiet = self.clock() - self._beat
        if quiet > self.stall_s:
            return False, f"stuck: the consume loop has not turned for {quiet:.0f} s"
        return True, f"live: the consume loop turned {quiet:.1f} s ago"

    def ready(self) -> tuple[bool, str]:
        live, why = self.live()
        if not live:
            return False, why
        waiting = self.waiting_for
        if waiting is not None:
            return False, f"not ready: waiting to {waiting}"
        return True, "ready: consuming"


def with_probes(metrics: Any, health: Probes) -> Callable[..., Iterable[bytes]]:
    """A WSGI app: ``/healthz`` and ``/readyz`` from ``health``, the rest to the
    Prometheus app ``metrics``."""
    probes = {"/healthz": health.live, "/readyz": health.ready}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        probe = probes.get(environ.get("PATH_INFO", ""))
        if probe is None:
            out: Iterable[bytes] = metrics(environ, start_response)
            return out
        ok, why = probe()
        start_response("200 OK" if ok else "503 Service Unavailable",
                       [("Content-Type", "text/plain; charset=utf-8")])  # fmt: skip
        return [f"{why}\n".encode()]

    return app

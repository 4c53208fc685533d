"""What run.py and the sides (ours_side.py, feast_side.py, quix_side.py) share. Standard
library only: it is imported in every virtualenv.

A side is a child process that prints its results as marked JSON lines on stdout (anything
else a library prints there is passed through to the log) and, when it serves several
requests, reads JSON commands one per line on stdin."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: machine
from machine import memory_mb

__all__ = ["commands", "emit", "memory_mb", "spec"]
MARK = "@@ "  # a result line: MARK + JSON


def emit(kind: str, **data: Any) -> None:
    """One result line for the orchestrator."""
    sys.stdout.write(MARK + json.dumps({"kind": kind, **data}, default=str) + "\n")
    sys.stdout.flush()


def commands() -> Iterator[dict[str, Any]]:
    """The orchestrator's commands, until it closes stdin."""
    for line in sys.stdin:
        if line.strip():
            yield json.loads(line)


def quantiles(ms: list[float]) -> dict[str, float]:
    """n, p50, p90, p99, mean and max of latency samples (ms); nearest rank."""
    if not ms:
        return {"n": 0}
    ordered, n = sorted(ms), len(ms)

    def rank(p: float) -> float:
        return round(ordered[min(n - 1, max(0, math.ceil(p * n) - 1))], 3)

    return {"n": n, "p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99),
            "mean": round(sum(ordered) / n, 3), "max": round(ordered[-1], 3)}  # fmt: skip


def spec() -> dict[str, Any]:
    """A side's parameters: JSON in argv[2] (argv[1] is the part to run)."""
    return dict(json.loads(sys.argv[2])) if len(sys.argv) > 2 else {}

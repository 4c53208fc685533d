"""Crash points: named places in the consumer's batch where a fault-injection test can
make the process SIGKILL itself, to prove that a crash at that exact step loses and
doubles nothing.

``FEATURESTORE_CRASH_AT="commit.offsets:3"`` kills the process the 3rd time it reaches
``commit.offsets``; several points may be given, comma-separated, and the first one
reached kills. Unset (every real deployment), ``reach`` is one falsy check.

The points, in the order one batch reaches them:

- ``poll``: records consumed, nothing done with them;
- ``decode``: decoded and validated, nothing written;
- ``offline.temporary``: a Parquet file written under its temporary name, not renamed;
- ``offline.written``: the batch's Parquet files in place;
- ``online.chunk``: one pipeline of ``write.lua`` calls executed (a view half written
  when it needs several; between views otherwise);
- ``online.applied``: every view applied to Redis;
- ``commit.letters``: the transaction open, the dead letters produced into it;
- ``commit.offsets``: the offsets added to the transaction, not committed;
- ``commit.done``: the transaction committed, the counters not yet moved.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

from featurestore.errors import ConfigError

POINTS = (
    "poll",
    "decode",
    "offline.temporary",
    "offline.written",
    "online.chunk",
    "online.applied",
    "commit.letters",
    "commit.offsets",
    "commit.done",
)
ENV = "FEATURESTORE_CRASH_AT"


def parse(text: str) -> dict[str, int]:
    """``"point:n,point:n"`` as {point: n}; an unknown point or a bad count is an error."""
    plan: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        point, _, count = item.partition(":")
        if point not in POINTS:
            raise ConfigError(f"{ENV}: unknown crash point {point!r}; known: {', '.join(POINTS)}")
        if not count.isdigit() or int(count) < 1:
            raise ConfigError(f"{ENV}: write {point}:N with N >= 1, not {item!r}")
        plan[point] = int(count)
    return plan


_plan = parse(os.environ.get(ENV, ""))
_reached: Counter[str] = Counter()


def reach(point: str) -> None:
    """Kill this process (SIGKILL: no cleanup, no flush) if the plan says so here."""
    if not _plan:
        return
    assert point in POINTS, point
    _reached[point] += 1
    if _plan.get(point) == _reached[point]:
        os.kill(os.getpid(), signal.SIGKILL)

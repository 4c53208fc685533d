"""Redis memory limits and the online store.

A Redis that evicts keys under memory pressure (a ``maxmemory-policy`` other than
``noeviction``, once ``maxmemory`` is set) drops tile hashes silently: a count or a sum
then reads lower than the events say, with no error anywhere. Every key the store writes
has a TTL, so the ``volatile-*`` policies evict them as surely as the ``allkeys-*`` ones.
A consumer refuses such a Redis at start unless its definition opts in
(``[sinks.online] allow_eviction = true``).

Under ``noeviction`` a full Redis refuses writes (``OOM command not allowed``) and still
answers reads: the consumer waits and retries the batch (nothing is committed before its
writes land; the offset guard makes the retried scripts idempotent) and alerts the views'
owners until memory is freed (`featurestore.stream.runtime`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from featurestore.errors import ConfigError

log = logging.getLogger(__name__)
SAFE_POLICY = "noeviction"


@dataclass(frozen=True)
class Memory:
    """One Redis server's memory settings and use (``INFO memory``)."""

    server: str
    policy: str  # maxmemory-policy
    maxmemory: int  # bytes; 0 is no limit
    used: int  # bytes

    @property
    def evicts(self) -> bool:
        """Whether this server drops keys when full (it is full only with a maxmemory)."""
        return self.policy != SAFE_POLICY and self.maxmemory > 0


def memory(client: Any) -> list[Memory]:
    """The memory settings of the servers behind ``client``: one for a standalone or
    Sentinel client, every node for a cluster (whose INFO replies are keyed by node).
    ``INFO`` rather than ``CONFIG GET``: managed Redis services often forbid CONFIG."""
    reply = client.info("memory")
    servers = {"redis": reply} if "maxmemory_policy" in reply else reply
    return [
        Memory(str(name), str(info["maxmemory_policy"]), int(info["maxmemory"]),
               int(info["used_memory"]))
        for name, info in servers.items()
    ]  # fmt: skip


def check_eviction(client: Any, *, allow: bool, who: str) -> None:
    """Refuse a Redis that may evict the store's keys (a ConfigError naming the setting),
    unless ``allow``; a warning when eviction is allowed or would start once a maxmemory
    is set."""
    for server in memory(client):
        setting = f"maxmemory-policy {server.policy}"
        if not server.evicts:
            if server.policy != SAFE_POLICY:
                log.warning(
                    "%s: Redis %s has %s and no maxmemory: it evicts feature tiles as soon as "
                    "a maxmemory is set; set maxmemory-policy %s", who, server.server,
                    setting, SAFE_POLICY,
                )  # fmt: skip
            continue
        if allow:
            log.warning(
                "%s: Redis %s may evict feature tiles (%s, maxmemory %d bytes), as "
                "allow_eviction permits: an evicted entity reads as one with fewer events",
                who, server.server, setting, server.maxmemory,
            )  # fmt: skip
            continue
        raise ConfigError(
            f"{who}: Redis {server.server} may evict the online store's keys ({setting}, "
            f"maxmemory {server.maxmemory} bytes): counts and sums would drop silently. "
            f"Set `maxmemory-policy {SAFE_POLICY}` on that Redis (the consumer then waits "
            "and alerts when it is full), or accept evictions with `allow_eviction = true` "
            "under [sinks.online] of the consumer definition"
        )

"""Redis for local runs: Debian's ``redis-server`` on loopback, data in the stack's home.

Redis persists with an append-only file, so features survive ``local down``/``up``
just as Kafka's topics and committed offsets do: the two never disagree after a
restart. Ready means it answered PING.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import redis

from featurestore.local.process import ProcessRecord, spawn, wait_until_ready
from featurestore.local.tools import require


def redis_conf(home: Path, port: int) -> str:
    lines = [
        "bind 127.0.0.1",
        f"port {port}",
        "protected-mode yes",
        "daemonize no",
        # Keep the command line as started: it carries the config path `down` checks.
        "set-proc-title no",
        f"dir {home}",
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        # The online store's tile records are 50-1000 bytes, a few dozen per hash: hashes
        # of up to 256 of them stay listpacks, whose HVALS (one per view and entity of a
        # lookup) costs Redis a third of a hashtable's (docs/guides/operators.md).
        "hash-max-listpack-value 1024",
        "hash-max-listpack-entries 256",
        "loglevel notice",
        'logfile ""',
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RedisServer:
    """One redis-server living in ``home`` (config, append-only file, log)."""

    home: Path
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def config_path(self) -> Path:
        return self.home / "redis.conf"

    def start(self) -> ProcessRecord:
        server = require("redis-server")
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(redis_conf(self.home, self.port))
        return spawn(
            [server, str(self.config_path)],
            self.home / "redis.log",
            cwd=self.home,
            marker=str(self.config_path),
        )


def wait_for_redis(url: str, record: ProcessRecord | None, timeout: float = 30.0) -> float:
    """Block until Redis answers PING; returns seconds waited."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return wait_until_ready(
            f"Redis at {url}", lambda: bool(client.ping()), record, timeout, "did not answer PING"
        )
    finally:
        client.close()

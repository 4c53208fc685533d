"""Redis for local runs: Debian's ``redis-server`` on loopback, data in the stack's home.

Redis persists with an append-only file, so features survive ``local down``/``up``
just as Kafka's topics and committed offsets do: the two never disagree after a
restart. Ready means it answered PING.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import redis

from featurestore.errors import LocalServiceError
from featurestore.local.process import ProcessRecord, is_running, log_tail, spawn
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
    started = time.monotonic()
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        while True:
            if record is not None and not is_running(record):
                raise LocalServiceError(
                    f"redis-server exited while starting; last lines of {record.log}:\n"
                    f"{log_tail(record.log)}"
                )
            try:
                if client.ping():
                    return time.monotonic() - started
            except redis.RedisError:
                pass
            if time.monotonic() - started > timeout:
                raise LocalServiceError(
                    f"Redis at {url} did not answer PING within {timeout:.0f}s."
                )
            time.sleep(0.05)
    finally:
        client.close()

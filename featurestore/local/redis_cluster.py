"""A throwaway Redis Cluster for tests and development: N ``redis-server`` primaries
on loopback, one subdirectory of ``home`` each, joined by ``redis-cli --cluster create``.

Invariants: nothing persists (no append-only file, no snapshots), so every start is a
fresh cluster; each node's cluster bus port is chosen free like its client port (the
default, port + 10000, can overflow 65535 for the kernel's high ephemeral ports);
``start`` returns only once every node reports ``cluster_state:ok``; ``stop`` signals
only the processes this object started.
"""

from __future__ import annotations

import subprocess
from functools import partial
from pathlib import Path

import redis

from featurestore.errors import ConfigError, LocalServiceError
from featurestore.local.process import ProcessRecord, free_port, spawn, stop, wait_until_ready
from featurestore.local.redis import redis_conf, wait_for_redis
from featurestore.local.tools import require

MIN_NODES = 3  # redis-cli --cluster create refuses fewer primaries


def cluster_conf(home: Path, port: int, bus_port: int) -> str:
    """The standalone local config plus cluster mode, without persistence."""
    return redis_conf(home, port) + "\n".join(
        [
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            f"cluster-port {bus_port}",
            "cluster-node-timeout 5000",
            # Later lines win: a test cluster is thrown away, so keep nothing on disk.
            "appendonly no",
            'save ""',
            "",
        ]
    )


class RedisCluster:
    """``nodes`` primaries without replicas, living under ``home``; ``url`` is the
    ``redis+cluster://`` URL that ``featurestore.online.connection.connect`` takes."""

    def __init__(self, home: Path, nodes: int = MIN_NODES) -> None:
        if nodes < MIN_NODES:
            raise ConfigError(
                f"A Redis Cluster needs at least {MIN_NODES} primaries, not {nodes}; "
                f"ask for {MIN_NODES} or more nodes."
            )
        self.home = home
        self.ports = tuple(free_port() for _ in range(nodes))
        self.records: list[ProcessRecord] = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self, timeout: float = 30.0) -> None:
        """Start every node, create the cluster, and wait until it serves every slot."""
        server, cli = require("redis-server"), require("redis-cli")
        try:
            for port in self.ports:
                self.records.append(self._spawn_node(server, port))
            for port, record in zip(self.ports, self.records, strict=True):
                wait_for_redis(f"redis://127.0.0.1:{port}/0", record, timeout)
            self._create(cli, timeout)
            for port, record in zip(self.ports, self.records, strict=True):
                wait_until_ready(
                    f"Redis Cluster node 127.0.0.1:{port}",
                    partial(_cluster_ok, port),
                    record,
                    timeout,
                    "did not report cluster_state:ok",
                )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node this object started."""
        for record in self.records:
            stop(record)
        self.records.clear()

    def _spawn_node(self, server: str, port: int) -> ProcessRecord:
        node_home = self.home / f"node-{port}"
        node_home.mkdir(parents=True, exist_ok=True)
        config = node_home / "redis.conf"
        config.write_text(cluster_conf(node_home, port, free_port()))
        return spawn([server, str(config)], node_home / "redis.log", node_home, str(config))

    def _create(self, cli: str, timeout: float) -> None:
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        cmd = [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0"]
        try:
            done = subprocess.run(
                [*cmd, "--cluster-yes"],
                check=False,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            done = None
        if done is None or done.returncode != 0:
            output = "timed out" if done is None else (done.stdout + done.stderr)[-2000:]
            raise LocalServiceError(
                f"`{' '.join(cmd)}` failed; node logs are under {self.home}.\n{output}"
            )


def _cluster_ok(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, decode_responses=True)
    try:
        return bool(client.cluster("INFO").get("cluster_state") == "ok")
    finally:
        client.close()

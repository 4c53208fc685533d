"""Redis deployments beyond the session's standalone server, each started from Debian's
``redis-server`` in a temporary directory and stopped at the end of the session:
a 3-node cluster, a server with a password, a master watched by one sentinel, and a
TLS server (skipped when ``redis-server`` was built without TLS)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from featurestore.local.process import ProcessRecord, free_port, spawn, stop
from featurestore.local.redis import redis_conf, wait_for_redis
from featurestore.local.redis_cluster import RedisCluster
from featurestore.local.tools import require
from tests.certs import make_certificates, openssl_missing
from tests.integration.registry.conftest import registry, start_registry

__all__ = ["registry", "start_registry"]

PASSWORD = "s3cret-for-tests"


@dataclass(frozen=True)
class TlsServer:
    port: int
    ca_file: Path


def _start(home: Path, config: str, *args: str) -> ProcessRecord:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "redis.conf"
    path.write_text(config)
    return spawn([require("redis-server"), str(path), *args], home / "redis.log", home, str(path))


def _ephemeral(home: Path, port: int) -> str:
    """The local server's config without persistence, for a server thrown away."""
    return redis_conf(home, port) + 'appendonly no\nsave ""\n'


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"), nodes=3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def password_redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A standalone server whose `default` user needs PASSWORD."""
    home, port = tmp_path_factory.mktemp("redis-auth"), free_port()
    record = _start(home, _ephemeral(home, port) + f"requirepass {PASSWORD}\n")
    try:
        wait_for_redis(f"redis://:{PASSWORD}@127.0.0.1:{port}/0", record)
        yield port
    finally:
        stop(record)


@pytest.fixture(scope="session")
def sentinel_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A sentinel watching a master named `mymaster`."""
    root, master_port, port = tmp_path_factory.mktemp("redis-sentinel"), free_port(), free_port()
    records = [_start(root / "master", _ephemeral(root / "master", master_port))]
    try:
        wait_for_redis(f"redis://127.0.0.1:{master_port}/0", records[0])
        sentinel_conf = "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                f"dir {root / 'sentinel'}",
                "set-proc-title no",
                'logfile ""',
                f"sentinel monitor mymaster 127.0.0.1 {master_port} 1",
                "",
            ]
        )
        # A sentinel rewrites its config file with what it learns: it must be writable.
        records.append(_start(root / "sentinel", sentinel_conf, "--sentinel"))
        wait_for_redis(f"redis://127.0.0.1:{port}/0", records[1])
        yield port
    finally:
        for record in records:
            stop(record)


def _tls_missing() -> str | None:
    """Why this redis-server cannot serve TLS, or None when it can."""
    server, ldd = require("redis-server"), shutil.which("ldd")
    missing = openssl_missing()
    if missing:
        return missing
    if ldd is not None:
        linked = subprocess.run([ldd, server], capture_output=True, text=True, check=False)
        if "libssl" not in linked.stdout:
            return f"{server} is not linked with OpenSSL: it was built without TLS support"
    return None


@pytest.fixture(scope="session")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """A server speaking only TLS, with a certificate from a test CA."""
    reason = _tls_missing()
    if reason:
        pytest.skip(reason)
    home, port = tmp_path_factory.mktemp("redis-tls"), free_port()
    certs = make_certificates(home)
    tls = "\n".join(
        [
            "port 0",
            f"tls-port {port}",
            f"tls-cert-file {certs.server_cert}",
            f"tls-key-file {certs.server_key}",
            f"tls-ca-cert-file {certs.ca}",
            "tls-auth-clients no",
            "",
        ]
    )
    record = _start(home, _ephemeral(home, port) + tls)
    try:
        wait_for_redis(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certs.ca}", record)
        yield TlsServer(port, certs.ca)
    finally:
        stop(record)

"""A second, dedicated Kafka broker for the security tests, in a temporary home on free
ports, stopped after them: a SASL_SSL listener with PLAIN users (admin, alice) and a
certificate for 127.0.0.1 from a test CA (PEM keystore). Its PLAINTEXT listener serves
the controller, the broker itself and the readiness check only. The registry fixtures
(on the session broker) are re-exported for the tests here."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from featurestore.local import KafkaDistribution, KafkaServer, wait_for_kafka
from featurestore.local.process import free_port, stop
from featurestore.settings import Settings
from tests.certs import make_certificates, openssl_missing
from tests.integration.registry.conftest import registry, start_registry

__all__ = ["PASSWORD", "SecureKafka", "registry", "secure_kafka", "start_registry"]

PASSWORD = "alice-Pa55-for-tests"


@dataclass(frozen=True)
class SecureKafka:
    """The SASL_SSL listener of the dedicated broker, and how a client reaches it."""

    bootstrap: str
    ca: Path

    def client(self, password: str = PASSWORD) -> dict[str, str]:
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "PLAIN",
            "sasl.username": "alice",
            "sasl.password": password,
            "ssl.ca.location": str(self.ca),
        }

    def properties(self, path: Path, password: str = PASSWORD) -> Path:
        """The client settings as the file FEATURESTORE_KAFKA_CONFIG names."""
        lines = [f"{key}={value}" for key, value in self.client(password).items()]
        path.write_text("# the test broker's SASL_SSL listener\n\n" + "\n".join(lines) + "\n")
        return path


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """The broker, started on first use (about 15 s) and stopped at the session's end."""
    missing = openssl_missing()
    if missing:
        pytest.skip(missing)
    home = tmp_path_factory.mktemp("kafka-sasl-ssl")
    certs = make_certificates(home / "certs")
    settings = Settings()
    libs = KafkaDistribution(settings.kafka_version, settings.cache_dir).ensure()
    port, controller, secure = free_port(), free_port(), free_port()
    users = f'user_admin="admin-secret" user_alice="{PASSWORD}"'
    extra = {
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller},"
        f"SASL_SSL://127.0.0.1:{secure}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{secure}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
        "SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": "org.apache.kafka.common.security."
        f'plain.PlainLoginModule required username="admin" password="admin-secret" {users};',
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(certs.server_key_and_chain()),
    }
    server = KafkaServer(home / "kafka", port, controller, heap="384M", extra=extra)
    record = server.start(libs)
    try:
        wait_for_kafka(server.bootstrap, record)
        yield SecureKafka(f"127.0.0.1:{secure}", certs.ca)
    finally:
        stop(record)

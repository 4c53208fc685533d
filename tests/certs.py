"""Test certificates made with the openssl command: a CA for one session and a server
certificate for 127.0.0.1 signed by it. The TLS Redis and the SASL_SSL Kafka of the
integration tests both use them."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificates:
    """PEM files in one directory; the server key is unencrypted PKCS#8."""

    ca: Path
    server_cert: Path
    server_key: Path

    def server_key_and_chain(self) -> Path:
        """One PEM file with the key, then the certificate: Kafka's PEM keystore."""
        path = self.server_key.with_name("server-keystore.pem")
        if not path.exists():
            path.write_text(self.server_key.read_text() + self.server_cert.read_text())
        return path


def openssl_missing() -> str | None:
    """Why no certificates can be made here, or None when they can."""
    if shutil.which("openssl") is None:
        return "the openssl command that makes the test certificates is not installed"
    return None


def make_certificates(home: Path) -> Certificates:
    """A test CA and a server certificate for 127.0.0.1 signed by it (EC keys: fast)."""
    home.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (home / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    for cmd in (
        ["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
         "-subj", "/CN=featurestore test CA"],
        ["req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "server.ext"],
    ):  # fmt: skip
        subprocess.run(["openssl", *cmd], cwd=home, capture_output=True, check=True)
    return Certificates(home / "ca.crt", home / "server.crt", home / "server.key")

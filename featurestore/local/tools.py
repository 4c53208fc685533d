"""The programs the local stack runs (java, mvn, redis-server): find them, or say how
to install them.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from featurestore.errors import LocalServiceError, MissingToolError

_INSTALL = {
    "java": (
        "run Apache Kafka",
        "Install Java 17 or newer (Debian/Ubuntu: apt-get install openjdk-17-jre-headless), "
        "or set FEATURESTORE_KAFKA_BOOTSTRAP to a Kafka you run yourself.",
    ),
    "mvn": (
        "download Apache Kafka's jars from Maven Central",
        "Install Maven (Debian/Ubuntu: apt-get install maven; macOS: brew install maven), "
        "or set FEATURESTORE_KAFKA_BOOTSTRAP to a Kafka you run yourself.",
    ),
    "redis-server": (
        "run the local Redis",
        "Install it (Debian/Ubuntu: apt-get install redis-server; `make test` does this "
        "for you), or set FEATURESTORE_REDIS_URL to a Redis you run yourself.",
    ),
}

MIN_JAVA = 17


def require(tool: str) -> str:
    """Absolute path of ``tool``, or a MissingToolError that says how to install it."""
    path = shutil.which(tool)
    if path is None:
        why, install = _INSTALL.get(tool, ("run the local stack", f"Install {tool}."))
        raise MissingToolError(tool, why, install)
    return path


def java_major_version(java: str) -> int:
    """The major version ``java -version`` reports (``1.8`` counts as 8)."""
    out = subprocess.run(
        [java, "-version"], capture_output=True, text=True, check=False, timeout=30
    )
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise LocalServiceError(f"could not read the Java version from `{java} -version`.")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def require_java() -> str:
    java = require("java")
    major = java_major_version(java)
    if major < MIN_JAVA:
        raise LocalServiceError(
            f"Apache Kafka 4 needs Java {MIN_JAVA}+, but {java} is Java {major}. "
            "Install a newer JDK (apt-get install openjdk-17-jre-headless) "
            "and put it first on PATH."
        )
    return java

"""Apache Kafka for local runs: jars from Maven Central, a single-node KRaft broker.

Invariants:
- The jars of one Kafka version are resolved once into ``<cache>/kafka/<version>/libs``;
  a ``.complete`` file is written only after Maven succeeded, so an interrupted
  download is resumed, never half-used.
- Storage is formatted once per data dir; a broker is ready only when it answers a
  real metadata request, never after a sleep.
"""

from __future__ import annotations

import base64
import re
import subprocess
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from featurestore.errors import ConfigError, LocalServiceError
from featurestore.local.process import ProcessRecord, log_tail, spawn, wait_until_ready
from featurestore.local.tools import require, require_java

# Kafka's POM leaves logging out; these are the log4j2 versions each line ships with.
# SLF4J 1.7 binding (log4j-slf4j-impl), not the slf4j2 one, which silently falls to NOP.
LOG4J_FOR_KAFKA = {"4.0": "2.24.3", "4.1": "2.24.3", "4.2": "2.25.3"}
DEPENDENCY_PLUGIN = "3.8.1"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>featurestore.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
  <build><plugins><plugin>
    <groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId>
    <version>{plugin}</version>
  </plugin></plugins></build>
</project>
"""

# Everything to stdout, which spawn() sends to kafka.log: JVM start-up errors and the
# broker's own log end up in one file. Chatty per-segment loggers are kept at WARN.
_LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.log
        level: WARN
      - name: org.apache.kafka.storage
        level: WARN
      - name: state.change.logger
        level: WARN
"""

_DOWNLOADED = re.compile(r"Downloaded from \S+: (\S+) \(([\d.]+) (B|kB|MB|GB)")
_UNITS = {"B": 1, "kB": 1_000, "MB": 1_000_000, "GB": 1_000_000_000}

# Called with (files downloaded so far, bytes downloaded so far, last artifact name).
DownloadProgress = Callable[[int, int, str], None]


def parse_maven_download(line: str) -> tuple[str, int] | None:
    """(artifact file name, size in bytes) from a Maven 'Downloaded from' line."""
    match = _DOWNLOADED.search(line)
    if not match:
        return None
    url, size, unit = match.groups()
    return url.rsplit("/", 1)[-1], int(float(size) * _UNITS[unit])


@dataclass(frozen=True)
class KafkaDistribution:
    """The jars of one Apache Kafka version, resolved with Maven into the cache."""

    version: str
    cache_dir: Path

    @property
    def root(self) -> Path:
        return self.cache_dir / "kafka" / self.version

    @property
    def libs(self) -> Path:
        return self.root / "libs"

    @property
    def log4j_version(self) -> str:
        line = ".".join(self.version.split(".")[:2])
        if line not in LOG4J_FOR_KAFKA:
            known = ", ".join(f"{v}.x" for v in LOG4J_FOR_KAFKA)
            raise ConfigError(
                f"Kafka {self.version} is not a version the local stack knows ({known}); "
                "set FEATURESTORE_KAFKA_VERSION to one of those."
            )
        return LOG4J_FOR_KAFKA[line]

    def is_resolved(self) -> bool:
        return (self.root / ".complete").exists()

    def ensure(self, progress: DownloadProgress | None = None) -> Path:
        """Resolve the jars unless already cached; returns the libs dir."""
        if self.is_resolved():
            return self.libs
        mvn = require("mvn")
        self.root.mkdir(parents=True, exist_ok=True)
        pom = self.root / "pom.xml"
        pom.write_text(
            _POM.format(kafka=self.version, log4j=self.log4j_version, plugin=DEPENDENCY_PLUGIN)
        )
        log_path = self.root / "maven.log"
        cmd = [
            mvn, "-B", "-Dstyle.color=never", "-f", str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={self.libs}", "-DincludeScope=runtime",
        ]  # fmt: skip
        files = total = 0
        with (
            log_path.open("w") as log,
            subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            ) as proc,
        ):
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                got = parse_maven_download(line)
                if got and progress:
                    files += 1
                    total += got[1]
                    progress(files, total, got[0])
        if proc.returncode != 0:
            raise LocalServiceError(
                f"Maven could not resolve Apache Kafka {self.version} (exit {proc.returncode}). "
                f"Check network access to Maven Central; the log is {log_path}:\n"
                f"{log_tail(log_path, 15)}"
            )
        (self.root / ".complete").write_text(self.version + "\n")
        return self.libs


def new_cluster_id() -> str:
    """A KRaft cluster id in Kafka's own format (22-char url-safe base64 of a UUID)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):  # as Kafka's Uuid.randomUuid does: no leading '-'
            return cid


def server_properties(
    data_dir: Path, port: int, controller_port: int, extra: Mapping[str, str] | None = None
) -> str:
    """A single-node combined broker+controller config on loopback.

    ``extra`` lines are appended after the defaults; a key given again there wins (Java
    Properties keep the last value), e.g. to add a SASL_SSL listener for a test.
    """
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        "controller.listener.names=CONTROLLER",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={data_dir}",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true",
        *(f"{key}={value}" for key, value in (extra or {}).items()),
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class KafkaServer:
    """One single-node KRaft broker living in ``home`` (config, data, log)."""

    home: Path
    port: int
    controller_port: int
    heap: str = "512M"
    extra: Mapping[str, str] = field(default_factory=dict)  # see server_properties

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.home / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_path(self) -> Path:
        return self.home / "kafka.log"

    def start(self, libs: Path) -> ProcessRecord:
        """Write the config, format storage if new, and launch the broker."""
        java = require_java()
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            server_properties(self.data_dir, self.port, self.controller_port, self.extra)
        )
        log4j = self.home / "log4j2.yaml"
        log4j.write_text(_LOG4J2)
        classpath = f"{libs}/*"
        if not (self.data_dir / "meta.properties").exists():
            fmt = subprocess.run(
                [java, "-cp", classpath, "kafka.tools.StorageTool", "format", "--standalone",
                 "-t", new_cluster_id(), "-c", str(self.config_path)],
                capture_output=True, text=True, check=False, timeout=120,
            )  # fmt: skip
            if fmt.returncode != 0:
                raise LocalServiceError(
                    f"formatting Kafka storage in {self.data_dir} failed:\n"
                    f"{fmt.stdout}{fmt.stderr}\nDelete {self.home} and run `local up` again."
                )
        cmd = [
            java, "-Xms256M", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath,
            "kafka.Kafka", str(self.config_path),
        ]  # fmt: skip
        return spawn(cmd, self.log_path, cwd=self.home, marker=str(self.config_path))


def wait_for_kafka(bootstrap: str, record: ProcessRecord | None, timeout: float = 90.0) -> float:
    """Block until the broker answers a metadata request; returns seconds waited."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    return wait_until_ready(
        f"Kafka at {bootstrap}",
        lambda: bool(admin.list_topics(timeout=1.0).brokers),
        record,
        timeout,
        "did not answer a metadata request",
    )

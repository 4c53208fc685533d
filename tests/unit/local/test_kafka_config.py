"""Pure parts of the local Kafka: config rendering, Maven progress, cluster ids."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from featurestore.errors import ConfigError
from featurestore.local.kafka import (
    KafkaDistribution,
    new_cluster_id,
    parse_maven_download,
    server_properties,
)


def test_server_properties_is_a_single_node_kraft_config() -> None:
    props = dict(
        line.split("=", 1)
        for line in server_properties(Path("/d"), 9092, 9093).splitlines()
        if line and not line.startswith("#")
    )
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    # --standalone format needs the bootstrap servers, and no static voters.
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert "controller.quorum.voters" not in props
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert props[key] == "1"
    assert props["log.dirs"] == "/d"


def test_extra_properties_come_last_so_they_win() -> None:
    extra = {"listeners": "SASL_SSL://127.0.0.1:9094", "sasl.enabled.mechanisms": "PLAIN"}
    lines = server_properties(Path("/d"), 9092, 9093, extra).splitlines()
    # Java Properties keep the last value of a key given twice: listeners is replaced.
    assert lines[-2:] == ["listeners=SASL_SSL://127.0.0.1:9094", "sasl.enabled.mechanisms=PLAIN"]
    assert lines[:-2] == server_properties(Path("/d"), 9092, 9093).splitlines()


def test_cluster_id_has_kafkas_format() -> None:
    for _ in range(200):
        cid = new_cluster_id()
        assert len(cid) == 22
        assert not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "[INFO] Downloaded from central: https://repo.maven.apache.org/maven2/org/apache/"
            "kafka/kafka_2.13/4.1.1/kafka_2.13-4.1.1.jar (6.4 MB at 12 MB/s)",
            ("kafka_2.13-4.1.1.jar", 6_400_000),
        ),
        (
            "Downloaded from central: https://x/y/z-1.pom (2.1 kB at 30 kB/s)",
            ("z-1.pom", 2_100),
        ),
        ("[INFO] Downloading from central: https://x/y/z-1.pom", None),
        ("[INFO] BUILD SUCCESS", None),
    ],
)
def test_maven_download_lines_feed_the_progress(
    line: str, expected: tuple[str, int] | None
) -> None:
    assert parse_maven_download(line) == expected


def test_log4j_version_follows_the_kafka_line(tmp_path: Path) -> None:
    assert KafkaDistribution("4.1.1", tmp_path).log4j_version == "2.24.3"
    assert KafkaDistribution("4.2.0", tmp_path).log4j_version == "2.25.3"
    with pytest.raises(ConfigError, match="FEATURESTORE_KAFKA_VERSION"):
        _ = KafkaDistribution("3.9.0", tmp_path).log4j_version


def test_missing_maven_names_the_tool_and_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(Exception, match=r"mvn was not found.*apt-get install maven"):
        KafkaDistribution("4.1.1", tmp_path).ensure()

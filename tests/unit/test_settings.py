"""Kafka client settings from the environment: the properties file FEATURESTORE_KAFKA_CONFIG
names, how it merges with FEATURESTORE_KAFKA_BOOTSTRAP, and redaction of secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from featurestore.errors import ConfigError
from featurestore.settings import Settings, is_secret, read_client_properties, redacted


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "client.properties"
    path.write_text(text)
    return path


def test_properties_are_key_value_lines_with_comments_and_blanks(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "# Confluent Cloud\n"
        "\n"
        "bootstrap.servers=broker:9092\n"
        "  security.protocol = SASL_SSL  \n"
        "sasl.mechanisms=PLAIN\n"
        "   # indented comment\n"
        "sasl.password=a=b#c \n"  # split at the first '=' only; '#' inside a value stays
        "ssl.ca.location=/etc/ssl/ca.pem\n"
        "sasl.mechanisms=SCRAM-SHA-512\n",  # given twice: the last wins
    )
    assert read_client_properties(path) == {
        "bootstrap.servers": "broker:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.password": "a=b#c",
        "ssl.ca.location": "/etc/ssl/ca.pem",
    }


def test_an_empty_value_is_kept(tmp_path: Path) -> None:
    assert read_client_properties(_write(tmp_path, "client.id=\n")) == {"client.id": ""}


def test_a_missing_file_names_the_path_and_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nope.properties"
    with pytest.raises(ConfigError, match=r"nope\.properties") as caught:
        read_client_properties(missing)
    assert "No such file or directory" in str(caught.value)
    assert "FEATURESTORE_KAFKA_CONFIG" in str(caught.value)


def test_a_directory_is_not_a_properties_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the Kafka client properties"):
        read_client_properties(tmp_path)


def test_a_line_without_equals_names_file_and_line_but_never_its_text(tmp_path: Path) -> None:
    path = _write(tmp_path, "# ok\nsecurity.protocol=SASL_SSL\n\nsasl.password hunter2\n")
    with pytest.raises(ConfigError) as caught:
        read_client_properties(path)
    message = str(caught.value)
    assert f"{path}, line 4" in message
    assert "key=value" in message
    assert "hunter2" not in message


def test_a_line_without_a_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line 1: the line has no key"):
        read_client_properties(_write(tmp_path, "=SASL_SSL\n"))


def test_text_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "client.properties"
    path.write_bytes(b"sasl.password=\xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_client_properties(path)


def test_the_bootstrap_env_wins_over_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "bootstrap.servers=file:9092\nsecurity.protocol=SASL_SSL\n")
    monkeypatch.setenv("FEATURESTORE_KAFKA_CONFIG", str(path))
    monkeypatch.setenv("FEATURESTORE_KAFKA_BOOTSTRAP", "env:9092")
    settings = Settings()
    assert settings.kafka_config == path
    assert settings.kafka_client_config() == {
        "bootstrap.servers": "env:9092",
        "security.protocol": "SASL_SSL",
    }


def test_the_files_bootstrap_counts_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "bootstrap.servers=file:9092\n")
    monkeypatch.delenv("FEATURESTORE_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("FEATURESTORE_KAFKA_CONFIG", str(path))
    # Given, so the local stack is neither started nor asked for Kafka.
    assert Settings().kafka_bootstrap == "file:9092"


def test_without_a_file_only_the_bootstrap_is_set() -> None:
    settings = Settings(kafka_bootstrap="k:9092", kafka_config=None)
    assert settings.kafka_client_config() == {"bootstrap.servers": "k:9092"}


def test_a_file_without_bootstrap_leaves_it_to_the_local_stack(tmp_path: Path) -> None:
    path = _write(tmp_path, "security.protocol=SSL\n")
    settings = Settings(kafka_bootstrap=None, kafka_config=path)
    assert settings.kafka_bootstrap is None
    assert settings.kafka_client_config() == {"security.protocol": "SSL"}


def test_a_bad_file_fails_when_the_settings_are_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.properties"):
        Settings(kafka_bootstrap=None, kafka_config=tmp_path / "nope.properties")


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("sasl.password", True),
        ("ssl.key.password", True),
        ("ssl.key.pem", True),
        ("ssl.keystore.location", True),  # "key" is enough: better masked than leaked
        ("sasl.oauthbearer.client.secret", True),
        ("SASL.OAUTHBEARER.TOKEN.ENDPOINT.URL", True),
        ("sasl.username", False),
        ("security.protocol", False),
        ("bootstrap.servers", False),
        ("ssl.ca.location", False),
    ],
)
def test_secret_keys(key: str, secret: bool) -> None:
    assert is_secret(key) is secret


def test_redacted_masks_only_secret_values() -> None:
    config = {"sasl.username": "alice", "sasl.password": "hunter2", "linger.ms": 5}
    assert redacted(config) == {"sasl.username": "alice", "sasl.password": "***", "linger.ms": 5}
    assert config["sasl.password"] == "hunter2"  # the original is left alone


def test_the_log_level_is_read_in_any_case_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURESTORE_LOG_LEVEL", "debug")
    assert Settings().log_level == "DEBUG"
    monkeypatch.delenv("FEATURESTORE_LOG_LEVEL")
    assert Settings().log_level == "INFO"
    monkeypatch.setenv("FEATURESTORE_LOG_LEVEL", "loud")
    with pytest.raises(ValidationError):
        Settings()

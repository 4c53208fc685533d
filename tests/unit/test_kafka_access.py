"""The access check's parts that need no broker: settings librdkafka rejects, and masking.
Refused credentials and TLS on a real broker: tests/integration/test_kafka_security.py."""

from __future__ import annotations

import pytest

from featurestore.errors import ConfigError
from featurestore.kafka_access import check_kafka_access, masked


def test_masked_replaces_every_secret_value() -> None:
    config = {"sasl.username": "alice", "sasl.password": "hunter2", "ssl.key.password": ""}
    text = "alice could not log in with hunter2 (hunter2)"
    assert masked(text, config) == "alice could not log in with *** (***)"


def test_settings_librdkafka_rejects_name_the_source_and_hide_secrets() -> None:
    config = {
        "bootstrap.servers": "127.0.0.1:1",
        "sasl.jaas.config": 'PlainLoginModule required password="hunter2";',  # Java's
    }
    with pytest.raises(ConfigError) as caught:
        check_kafka_access(config, "FEATURESTORE_KAFKA_CONFIG (/etc/kafka.properties)")
    message = str(caught.value)
    assert "Java JAAS configuration is not supported" in message
    assert "FEATURESTORE_KAFKA_CONFIG (/etc/kafka.properties)" in message
    assert "librdkafka" in message
    assert "hunter2" not in message


def test_an_unknown_setting_is_named() -> None:
    config = {"bootstrap.servers": "127.0.0.1:1", "sasl.usrname": "alice"}
    with pytest.raises(ConfigError, match=r'No such configuration property: "sasl.usrname"'):
        check_kafka_access(config, "here")

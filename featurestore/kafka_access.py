"""Whether Kafka accepts a client config, asked once before a command starts its clients.

Credentials the broker refuses (SASL) and a TLS handshake that fails are errors no retry
cures: librdkafka would retry them in the background forever while the command waits
for metadata. They are reported at once instead, as a ConfigError naming the settings
to fix and where they come from. A broker that is merely unreachable is not judged
here: the caller retries or fails as it would without this check.

Messages quote librdkafka's own words, with the value of every secret setting masked.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from featurestore.errors import ConfigError
from featurestore.settings import is_secret

# Error code -> (what the broker did, the settings to check).
_HOPELESS = {
    KafkaError._AUTHENTICATION: (
        "refused the credentials",
        "sasl.username and sasl.password (and sasl.mechanisms)",
    ),
    KafkaError._SSL: ("failed the TLS handshake", "ssl.ca.location and security.protocol"),
}
# librdkafka's "sasl_ssl://127.0.0.1:9093/bootstrap: " before and "(after 5ms in state
# AUTH_REQ)" after the reason.
_BROKER_PREFIX = re.compile(r"^\S+://\S+: ")
_ATTEMPT_SUFFIX = re.compile(r"\s*\(after \d+ms in state [^)]*\)\s*$")
LIBRDKAFKA_CONFIGURATION = "https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md"


def masked(text: str, config: Mapping[str, Any]) -> str:
    """``text`` with the value of every secret setting of ``config`` replaced by ``***``."""
    for key, value in config.items():
        if is_secret(key) and str(value):
            text = text.replace(str(value), "***")
    return text


def check_kafka_access(config: Mapping[str, Any], where: str, timeout: float = 10.0) -> None:
    """Raise ConfigError when the broker refuses ``config`` for good; ``where`` says where
    the settings come from, e.g. ``FEATURESTORE_KAFKA_CONFIG (/etc/fs/kafka.properties)``.

    Returns once the broker answers a metadata request, or when it cannot be reached at
    all (every broker down), or after ``timeout`` without a verdict."""
    errors: list[KafkaError] = []
    try:
        admin = AdminClient({**config, "error_cb": errors.append, "log_level": 0})
    except KafkaException as exc:
        reason = masked(exc.args[0].str(), config).rstrip(".")
        raise ConfigError(
            f"the Kafka client settings are not valid: {reason}. Fix it in {where}; the "
            f"settings are librdkafka's (not the Java client's): {LIBRDKAFKA_CONFIGURATION}"
        ) from None
    bootstrap = config.get("bootstrap.servers", "?")
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=0.5)
            return
        except KafkaException:
            pass
        admin.poll(0)  # serves error_cb
        for error in errors:
            if error.code() in _HOPELESS:
                did, settings = _HOPELESS[error.code()]
                reason = _ATTEMPT_SUFFIX.sub("", _BROKER_PREFIX.sub("", error.str())).rstrip(".")
                raise ConfigError(
                    f"Kafka at {bootstrap} {did}: {masked(reason, config)}. "
                    f"Check {settings} in {where}."
                )
        down = any(e.code() == KafkaError._ALL_BROKERS_DOWN for e in errors)
        if down or time.monotonic() > deadline:
            return

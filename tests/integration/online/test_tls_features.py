"""Features over TLS, end to end: a consumer writes them and the feature client reads
them through a `rediss://` URL taken as given (the test CA in its query, the client's
from the definition's online sink), and they equal the same stream's features in the
session's plain Redis."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from featurestore.contracts.registry.client import RegistryClient
from featurestore.online import RedisOnlineStore, connect
from featurestore.serving import FeatureClient
from featurestore.stream import ConsumerRuntime, load_definition
from tests.conftest import Services
from tests.e2e.test_features import MINUTE, VIEWS, definition, produce, stream, values_at
from tests.frames import assert_close
from tests.integration.online.conftest import TlsServer
from tests.integration.registry.conftest import RunningRegistry

pytestmark = pytest.mark.integration


def test_a_consumer_and_the_feature_client_over_tls(  # noqa: PLR0917 - fixtures
    services: Services, registry: RunningRegistry, new_topic: Any, redis_prefix: str,
    tls_redis: TlsServer, tmp_path: Path,
) -> None:  # fmt: skip
    url = f"rediss://127.0.0.1:{tls_redis.port}/0?ssl_ca_certs={tls_redis.ca_file}"
    topic = new_topic(partitions=3)
    events = stream(900, seed=5, end_ms=int(time.time() * 1000) - MINUTE, cards=30)
    produce(services, registry, topic, events)
    kafka = {"bootstrap.servers": services.kafka_bootstrap}

    folder = tmp_path / "consumers"
    folder.mkdir()
    (folder / "tls.toml").write_text(
        f'name = "tls"\ntopics = ["{topic}"]\nsubject = "payments-value"\n'
        f'group = "fs-tls-{topic}"\nbatch_wait_ms = 100\n'
        f'[sinks.online]\nprefix = "{redis_prefix}tls"\nredis_url = "{url}"\n' + VIEWS
    )
    d = load_definition(folder / "tls.toml")
    assert d.sinks.online.redis_url is not None
    secure = RedisOnlineStore(connect(d.sinks.online.redis_url, check=True), d.join_keys,
                              d.sinks.online.prefix)  # fmt: skip
    ConsumerRuntime(d, kafka, RegistryClient(registry.url), str(tmp_path / "offline-tls"),
                    online=secure).run(until=lambda s: s.events_in >= len(events))  # fmt: skip

    plain_d = definition(topic, f"fs-plain-{topic}", f"{redis_prefix}plain", batch_size=300)
    plain = RedisOnlineStore(connect(services.redis_url), plain_d.join_keys,
                             f"{redis_prefix}plain")  # fmt: skip
    ConsumerRuntime(plain_d, kafka, RegistryClient(registry.url), str(tmp_path / "offline"),
                    online=plain).run(until=lambda s: s.events_in >= len(events))  # fmt: skip

    cards = sorted({e["card_id"] for _, e in events})
    newest = max(e["ts"] for _, e in events)
    assert_close(values_at(secure, d, cards, newest), values_at(plain, plain_d, cards, newest))

    client = FeatureClient.connect(folder, clock=lambda: newest)
    features = [f"card_activity:{f.name}" for f in d.views[0].features]
    served = client.get_online_features({"card_id": cards}, features)
    assert set(served.status(d.views[0].features[0].name)) == {"PRESENT"}
    expected = values_at(plain, plain_d, cards, newest)
    assert_close(served.to_polars().select(expected.columns), expected)
    assert len(cards) > 0

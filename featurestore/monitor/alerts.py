"""Alerts: a breach fires once and resolves once, to Kafka, Prometheus and the log.

Each check reports, per alert key (kind, subject, name, statistic), whether its
threshold is breached now. The first breached check fires the alert; further breached
checks say nothing (no storms); the first clear check after a firing resolves it. Each
firing and resolution is:

- a JSON event on the alerts topic (default ``featurestore.alerts``), keyed by the
  alert's id, through an idempotent producer;
- the gauge ``featurestore_alert_active`` (1 while firing) and the counter
  ``featurestore_alerts`` (by kind and status);
- one log line (WARNING when firing, INFO when resolved).

Every event carries the view or contract, the feature or field, the statistic, its
value and threshold, the window it was computed over, and the owner to page.
Kinds: drift, violation_rate, null_rate, freshness, lag, online_store_full (Redis
refused a write for lack of memory) and offline_store_full (no space left for the
offline store's files); in both the consumer waits until there is room.
Invariants: with a Redis to keep it in (``state``), which alerts fire survives a
restart, so a restarted consumer resolves what its predecessor fired and does not fire
it again; without, the state is the process's own.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
DEFAULT_TOPIC = "featurestore.alerts"

ALERT_ACTIVE = Gauge(
    "featurestore_alert_active",
    "1 while an alert fires, 0 once resolved.",
    ["kind", "subject", "name", "statistic"],
)
ALERTS = Counter("featurestore_alerts", "Alert firings and resolutions.", ["kind", "status"])

Kind = Literal[
    "drift",
    "violation_rate",
    "null_rate",
    "freshness",
    "lag",
    "online_store_full",
    "offline_store_full",
]


@dataclass(frozen=True)
class Alert:
    kind: Kind
    subject: str  # the view (``card_spend v2``) or the contract subject
    name: str  # the feature, input field, rule or partition
    statistic: str  # psi, ks, js, null_rate, violation_rate, freshness_seconds, lag
    value: float
    threshold: float
    window: str  # what the value was computed over, e.g. "last 15m (4,210 values)"
    owner: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.kind, self.subject, self.name, self.statistic)

    @property
    def id(self) -> str:
        return ":".join(self.key)


class Alerts:
    """Fire-once, resolve-once alerts for one process."""

    def __init__(
        self,
        kafka: dict[str, Any] | None,
        topic: str = DEFAULT_TOPIC,
        source: str = "featurestore",
        state: tuple[Any, str] | None = None,
    ) -> None:
        self.topic = topic
        self.source = source
        self.state = state  # (redis client, hash key) holding the firing alerts
        self.firing: dict[tuple[str, str, str, str], Alert] = {}
        if state is not None:
            client, key = state
            for raw in client.hvals(key):
                alert = Alert(**json.loads(raw))
                self.firing[alert.key] = alert
        self.producer = (
            Producer({**kafka, "enable.idempotence": True, "linger.ms": 50})
            if kafka is not None else None
        )  # fmt: skip

    def check(self, alert: Alert, breached: bool) -> str | None:
        """Record one check; returns "firing" or "resolved" when that changed."""
        if breached and alert.key not in self.firing:
            self.firing[alert.key] = alert
            self._save("hset", alert.id, json.dumps(asdict(alert)))
            self._emit(alert, "firing")
            return "firing"
        if not breached and alert.key in self.firing:
            del self.firing[alert.key]
            self._save("hdel", alert.id)
            self._emit(alert, "resolved")
            return "resolved"
        return None

    def _save(self, command: str, *args: str) -> None:
        """Keep which alerts fire in Redis, best effort: the alert itself must go out
        when Redis is what fails (full, or away)."""
        if self.state is None:
            return
        client, key = self.state
        try:
            getattr(client, command)(key, *args)
        except RedisError as exc:
            log.warning("could not keep the alert state in Redis (%s): a restart may "
                        "fire or resolve this alert again", exc)  # fmt: skip

    def flush(self, timeout: float = 10.0) -> None:
        if self.producer is not None:
            self.producer.flush(timeout)

    def _emit(self, alert: Alert, status: str) -> None:
        event = {**asdict(alert), "id": alert.id, "status": status, "source": self.source,
                 "at": int(time.time() * 1000)}  # fmt: skip
        ALERT_ACTIVE.labels(*alert.key).set(1 if status == "firing" else 0)
        ALERTS.labels(alert.kind, status).inc()
        line = (f"alert {status}: {alert.kind} {alert.subject} {alert.name} {alert.statistic}"
                f"={alert.value:.4g} (threshold {alert.threshold:.4g}, {alert.window}); "
                f"owner {alert.owner}")  # fmt: skip
        log.log(logging.WARNING if status == "firing" else logging.INFO, line)
        if self.producer is not None:
            self.producer.produce(self.topic, key=alert.id.encode(), value=json.dumps(event))
            self.producer.poll(0)


def read_alerts(kafka: dict[str, Any], topic: str = DEFAULT_TOPIC) -> list[dict[str, Any]]:
    """Every alert event on ``topic`` (one partition, as the alerts producer writes it)
    from its start, until three polls of a second find nothing more."""
    reader = Consumer({**kafka, "group.id": f"{topic}-reader", "enable.auto.commit": False,
                       "auto.offset.reset": "earliest"})  # fmt: skip
    try:
        reader.assign([TopicPartition(topic, 0, 0)])
        found: list[dict[str, Any]] = []
        idle = 0
        while idle < 3:
            message = reader.poll(1.0)
            if message is None or message.error():
                idle += 1
                continue
            found.append(json.loads(message.value()))
        return found
    finally:
        reader.close()

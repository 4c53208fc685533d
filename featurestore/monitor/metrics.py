"""Prometheus metrics of the consumer (and later the server), in the default registry.

Counters move only after a batch is committed, so ``events_in == events_valid +
sum(events_dead_lettered)`` holds at every scrape, per consumer and contract.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

EVENTS_IN = Counter(
    "featurestore_events_in", "Events consumed and committed.", ["consumer", "contract"]
)
EVENTS_VALID = Counter(
    "featurestore_events_valid", "Events that met their contract.", ["consumer", "contract"]
)
EVENTS_DEAD_LETTERED = Counter(
    "featurestore_events_dead_lettered",
    "Events sent to the dead-letter topic, by reason.",
    ["consumer", "contract", "reason"],
)
BATCH_SECONDS = Histogram(
    "featurestore_batch_seconds",
    "Wall time of one micro-batch, poll to commit.",
    ["consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ONLINE_WRITE_SECONDS = Histogram(
    "featurestore_online_write_seconds",
    "Wall time of applying one batch of one feature view to Redis.",
    ["consumer", "view"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RETRIES = Counter(
    "featurestore_retries", "Operations retried after a dependency failed.", ["consumer", "what"]
)


def serve_metrics(port: int) -> None:
    """Expose /metrics on ``port`` (0: not at all)."""
    if port:
        start_http_server(port)

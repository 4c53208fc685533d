"""Prometheus metrics of the consumer and the feature server, in the default registry.

Counters move only after a batch is committed, so ``events_in == events_valid +
sum(events_dead_lettered)`` holds at every scrape, per consumer and contract.
"""

from __future__ import annotations

import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app, start_http_server

from featurestore.monitor.probes import with_probes

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
OFFLINE_WRITE_SECONDS = Histogram(
    "featurestore_offline_write_seconds",
    "Wall time of writing one batch's valid events to Parquet.",
    ["consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENT_FRESHNESS_SECONDS = Histogram(
    "featurestore_event_freshness_seconds",
    "End-to-end freshness: wall time minus event time when an event's features are "
    "written (up to 100 events sampled per batch).",
    ["consumer"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
)
CONSUMER_LAG = Gauge(
    "featurestore_consumer_lag",
    "Events not yet read, per assigned partition (at each monitoring check).",
    ["consumer", "topic", "partition"],
)
RETRIES = Counter(
    "featurestore_retries", "Operations retried after a dependency failed.", ["consumer", "what"]
)


HTTP_REQUEST_SECONDS = Histogram(
    "featurestore_http_request_seconds",
    "Wall time of one HTTP request of a featurestore server, by route template.",
    ["server", "method", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
HTTP_ERRORS = Counter(
    "featurestore_http_errors",
    "HTTP responses with a status of 400 or more, by route template and status.",
    ["server", "method", "route", "status"],
)
LOOKUP_SECONDS = Histogram(
    "featurestore_lookup_seconds",
    "Wall time of one online lookup (Redis round trip, decode, window merge).",
    ["client"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
LOOKUP_ENTITIES = Histogram(
    "featurestore_lookup_entities",
    "Entity rows per online lookup.",
    ["client"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes every few seconds: not one log line each."""


def serve_metrics(port: int, health: Any = None) -> None:
    """Expose /metrics on ``port`` (0: not at all), and with ``health`` (a consumer's
    `featurestore.monitor.probes.Probes`) the probes /healthz and /readyz."""
    if not port:
        return
    if health is None:
        start_http_server(port)
        return
    server = make_server("", port, with_probes(make_wsgi_app(), health), _Server, _Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()

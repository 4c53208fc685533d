"""A served feature store for the serving tests: definitions written to a folder, card
payments applied to the session's Redis under the test's own prefix, and HTTP servers
run by uvicorn on free ports (real sockets, real Redis)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import uvicorn
from fastapi import FastAPI

from featurestore.local.process import free_port
from featurestore.online import RedisOnlineStore, connect
from featurestore.serving import Catalog

MINUTE, HOUR = 60_000, 3_600_000
# The clock every client in these tests reads: values must not move between the
# in-process and the HTTP lookups they compare.
AT = (int(time.time() * 1000) // HOUR) * HOUR + 17 * MINUTE + 30_000

REFS = [
    "card_spend:amount_count_10m", "card_spend:amount_sum_1h", "card_spend:amount_mean_1h",
    "card_spend:amount_std_24h", "card_places:merchant_id_distinct_24h",
    "card_places:country_last_24h",
]  # fmt: skip

DEFINITION = """
name = "payments"
topics = ["payments"]
subject = "payments-value"

[sinks.online]
prefix = "{prefix}"
redis_url = "{redis_url}"

[[entities]]
name = "card"
join_keys = ["card_id"]

[[views]]
name = "card_spend"
version = 1
source = "payments-value"
entity = "card"
owner = "payments-team@example.com"

[[views.aggregations]]
column = "amount"
functions = ["count", "sum", "mean", "max", "std"]
windows = ["10m/1m", "1h/5m", "24h/1h"]

[[views]]
name = "card_places"
version = 1
source = "payments-value"
entity = "card"
owner = "risk-team@example.com"

[[views.aggregations]]
column = "merchant_id"
functions = ["distinct"]
windows = ["1h/5m", "24h/1h"]

[[views.aggregations]]
column = "country"
functions = ["last"]
windows = ["24h/1h"]

[[feature_services]]
name = "fraud_model"
features = ["card_spend:amount_sum_1h", "card_spend:amount_count_10m",
            "card_places:merchant_id_distinct_24h", "card_places:country_last_24h"]
owner = "fraud-ml@example.com"
"""


@dataclass(frozen=True)
class Served:
    """Definitions on disk, their catalog, and which cards Redis holds how."""

    definitions: Path
    catalog: Catalog
    redis_url: str
    cards: list[str]  # with recent payments: PRESENT
    stale: str  # only payments 30 hours old: EXPIRED
    unknown: str  # never paid: NOT_FOUND


def payments(cards: list[str], start: int, end: int, n: int, seed: int) -> pl.DataFrame:
    rng = random.Random(seed)
    times = sorted(rng.randint(start, end) for _ in range(n))
    return pl.DataFrame(
        {
            "card_id": [rng.choice(cards) for _ in range(n)],
            "amount": [round(rng.lognormvariate(3, 1), 2) for _ in range(n)],
            "merchant_id": [f"m{rng.randint(0, 30)}" for _ in range(n)],
            "country": [rng.choice(["DE", "FR", "NL"]) for _ in range(n)],
            "ts": [datetime.fromtimestamp(t / 1000, UTC) for t in times],
            "_topic": ["payments"] * n,
            "_partition": [0] * n,
            "_offset": list(range(seed * 1_000_000, seed * 1_000_000 + n)),
        },
        schema_overrides={"_partition": pl.Int32, "ts": pl.Datetime("ms", "UTC")},
    )


def write_definitions(folder: Path, prefix: str, redis_url: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "payments.toml").write_text(DEFINITION.format(prefix=prefix, redis_url=redis_url))
    return folder


def load(catalog: Catalog, redis_url: str, frames: list[pl.DataFrame]) -> None:
    store = RedisOnlineStore(connect(redis_url), catalog.join_keys, catalog.prefix)
    for view in catalog.views.values():
        store.register(view, {"merchant_id", "country"})
        for frame in frames:
            store.apply(view, frame, "ts")
    store.client.close()


def serve_fixture(tmp_path: Path, prefix: str, redis_url: str) -> Served:
    definitions = write_definitions(tmp_path / "definitions", prefix.rstrip(":"), redis_url)
    catalog = Catalog.load(definitions)
    cards = [f"card_{i:04d}" for i in range(12)]
    recent = payments(cards, AT - 3 * HOUR, AT - 5_000, 600, seed=1)
    old = payments(["card_stale"], AT - 31 * HOUR, AT - 30 * HOUR, 5, seed=2)
    load(catalog, redis_url, [old, recent])
    return Served(definitions, catalog, redis_url, cards, "card_stale", "card_never")


@pytest.fixture
def served(tmp_path: Path, services: Any, redis_prefix: str) -> Served:
    return serve_fixture(tmp_path, redis_prefix, services.redis_url)


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn on a free port in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the feature server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


Clock = Callable[[], int]


def fixed_clock() -> int:
    return AT

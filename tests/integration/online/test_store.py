"""The online store on real Redis (standalone and a 3-node cluster): what it reads back
equals the offline engine's value at the same time, replays never double count, values
decay with time, tiles expire and old ones are pruned."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from redis.exceptions import ResponseError

from featurestore.errors import ConfigError, OnlineMergeError
from featurestore.features import as_of, feature_column
from featurestore.features.definitions import FeatureView
from featurestore.local.redis_cluster import RedisCluster
from featurestore.online import RedisOnlineStore, connect
from featurestore.online import store as store_module
from tests.frames import assert_close

pytestmark = pytest.mark.integration

MINUTE, HOUR = 60_000, 3_600_000
BASE = 1_780_000_000_000 // HOUR * HOUR  # on an hour boundary
VIEW = FeatureView.model_validate(
    {
        "name": "card_spend", "source": "payments-value", "entity": "card", "owner": "o",
        "allowed_lateness": "30m",
        "aggregations": [
            {"column": "amount", "functions": ["count", "sum", "mean", "min", "max", "std", "last"],
             "windows": ["10m/1m", "1h/5m", "24h/1h"]},
            {"column": "merchant_id", "functions": ["distinct"], "windows": ["1h/5m"]},
            {"column": "country", "functions": ["last"], "windows": ["24h/1h"]},
        ],
    }
)  # fmt: skip
TEXT = {"merchant_id", "country"}
FEATURES = [f.name for f in VIEW.features]


def events(n: int, seed: int, cards: int = 20, start_offset: int = 0) -> pl.DataFrame:
    rng = random.Random(seed)
    times = sorted(BASE + rng.randint(0, 3 * HOUR) for _ in range(n))
    return pl.DataFrame(
        {
            "card_id": [f"card_{rng.randint(0, cards - 1):06d}" for _ in range(n)],
            "amount": [
                None if rng.random() < 0.05 else round(rng.uniform(0, 500), 2) for _ in range(n)
            ],
            "merchant_id": [f"m{rng.randint(0, 40)}" for _ in range(n)],
            "country": [rng.choice(["DE", "FR", "NL", "a,b"]) for _ in range(n)],
            "ts": [datetime.fromtimestamp(t / 1000, UTC) for t in times],
            "_topic": ["payments"] * n,
            "_partition": [0] * n,
            "_offset": list(range(start_offset, start_offset + n)),
        },
        schema_overrides={"_partition": pl.Int32, "ts": pl.Datetime("ms", "UTC")},
    )


def offline(frame: pl.DataFrame, cards: list[str], at: int) -> pl.DataFrame:
    rows = pl.DataFrame({"card_id": cards, "at": [at] * len(cards)})
    columns = []
    for f in VIEW.features:
        out = as_of(frame, rows, ["card_id"], "ts", f.window, aggs={f.column: [f.function]},
                    at="at", value_cols={f.column: VIEW.values[f.column]},
                    offset_col="_offset")  # fmt: skip
        columns.append(out[feature_column(f.column, f.function)].alias(f.name))
    return pl.DataFrame(columns)


@pytest.fixture(params=["standalone", "cluster"])
def store(
    request: pytest.FixtureRequest, services: Any, redis_prefix: str
) -> Iterator[RedisOnlineStore]:
    if request.param == "standalone":
        client = connect(services.redis_url)
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        client = connect(cluster.url)
    store = RedisOnlineStore(client, {"card": ["card_id"]}, prefix=redis_prefix.rstrip(":"))
    store.register(VIEW, TEXT)
    yield store
    if request.param == "cluster":
        for key in client.scan_iter(match=f"{redis_prefix}*"):
            client.delete(key)
    client.close()


CARDS = [f"card_{i:06d}" for i in range(22)]  # two never seen


def test_online_equals_offline_at_several_times(store: RedisOnlineStore) -> None:
    frame = events(3000, seed=1)
    for batch in frame.iter_slices(700):
        store.apply(VIEW, batch, "ts")
    for at in (BASE + 3 * HOUR, BASE + 3 * HOUR + 7 * MINUTE, BASE + 4 * HOUR, BASE + 30 * HOUR):
        cards = pl.DataFrame({"card_id": CARDS})
        assert_close(store.read(VIEW, cards, at, FEATURES), offline(frame, CARDS, at))


def test_values_decay_without_new_events(store: RedisOnlineStore) -> None:
    frame = events(500, seed=2, cards=3)
    store.apply(VIEW, frame, "ts")
    cards = pl.DataFrame({"card_id": ["card_000000"]})
    now = BASE + 3 * HOUR
    fresh = store.read(VIEW, cards, now, ["amount_count_10m", "amount_count_24h"]).row(0)
    later = store.read(VIEW, cards, now + 2 * HOUR, ["amount_count_10m", "amount_count_24h"])
    assert fresh[0] > 0
    assert later.row(0) == (0, fresh[1])
    gone = store.read(VIEW, cards, now + 48 * HOUR, ["amount_count_24h", "amount_mean_24h"])
    assert gone.row(0) == (0, None)


def test_replays_never_double_count(store: RedisOnlineStore) -> None:
    frame = events(2000, seed=3)
    at = BASE + 3 * HOUR
    cards = pl.DataFrame({"card_id": CARDS})
    store.apply(VIEW, frame.slice(0, 1200), "ts")
    # The same batch again: skipped whole.
    again = store.apply(VIEW, frame.slice(0, 1200), "ts")
    assert again.segments == 0
    assert again.skipped_entities == again.entities
    # A replay cut elsewhere (after a crash): straddles the stored offsets, resent per event.
    straddle = store.apply(VIEW, frame.slice(600, 1400), "ts")
    assert straddle.resent_entities > 0
    assert_close(store.read(VIEW, cards, at, FEATURES), offline(frame, CARDS, at))


def test_a_zombie_writer_never_double_counts_nor_loses_events(store: RedisOnlineStore) -> None:
    """A member that lost its partition but still writes (its Kafka transaction is fenced;
    Redis is not in it) and the new owner, interleaved over the same partition: every
    event counts once, whoever applies it first, because each hash keeps the highest
    offset applied per source partition and the script classifies every segment against
    it (at or below: skipped; straddling: resent one event per segment)."""
    frame = events(2000, seed=13)
    zombie = RedisOnlineStore(store.client, {"card": ["card_id"]}, prefix=store.prefix)
    store.apply(VIEW, frame.slice(0, 500), "ts")  # the old owner, committed up to 499
    zombie.apply(VIEW, frame.slice(500, 500), "ts")  # applied, never committed: fenced
    store.apply(VIEW, frame.slice(500, 1000), "ts")  # the new owner, from 500
    zombie.apply(VIEW, frame.slice(500, 500), "ts")  # the zombie retries its batch
    zombie.apply(VIEW, frame.slice(1000, 700), "ts")  # and runs ahead of the new owner
    store.apply(VIEW, frame.slice(1500, 500), "ts")
    at = BASE + 3 * HOUR
    cards = pl.DataFrame({"card_id": CARDS})
    assert_close(store.read(VIEW, cards, at, FEATURES), offline(frame, CARDS, at))


def test_writers_of_two_partitions_merge_into_one_hash_without_losing_either(
    store: RedisOnlineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two consumers own two partitions whose events touch the same entities (a view
    keyed by another key than the topic's). One writes between the other's read and its
    write: the later write finds the hash's token changed, writes nothing, reads again
    and merges into the other's tiles; every event counts once."""
    frame = events(1200, seed=17, cards=3)
    one = frame.filter(pl.col("_offset") % 2 == 0)
    two = frame.filter(pl.col("_offset") % 2 == 1).with_columns(
        pl.lit(1, pl.Int32).alias("_partition")
    )
    other = RedisOnlineStore(store.client, {"card": ["card_id"]}, prefix=store.prefix)
    write, writes = store._write, []

    def other_writes_first(*args: Any) -> list[str]:
        if not writes:
            other.apply(VIEW, two, "ts")  # after this store read the hashes
        writes.append(1)
        changed = write(*args)
        if len(writes) == 1:
            assert changed  # refused: the hashes changed since they were read
        return changed

    monkeypatch.setattr(store, "_write", other_writes_first)
    stats = store.apply(VIEW, one, "ts")
    assert len(writes) >= 2
    assert stats.segments > 0
    at = BASE + 3 * HOUR
    cards = pl.DataFrame({"card_id": CARDS})
    assert_close(store.read(VIEW, cards, at, FEATURES), offline(frame, CARDS, at))


def test_one_entity_with_thousands_of_tiles_in_one_batch(store: RedisOnlineStore) -> None:
    """A backfill chunk can touch thousands of one entity's tiles (here 5,000 one-minute
    tiles of one card, merged into stored ones by a second apply): the script reads and
    writes them in parts, and the values equal the offline engine's."""
    n = 5_000
    frame = pl.DataFrame(
        {
            "card_id": ["card_000000"] * n,
            "amount": [float(i % 97) for i in range(n)],
            "merchant_id": [f"m{i % 13}" for i in range(n)],
            "country": ["DE", "FR"] * (n // 2),
            "ts": [datetime.fromtimestamp((BASE + i * MINUTE) / 1000, UTC) for i in range(n)],
            "_topic": ["payments"] * n,
            "_partition": [0] * n,
            "_offset": list(range(n)),
        },
        schema_overrides={"_partition": pl.Int32, "ts": pl.Datetime("ms", "UTC")},
    )
    store.apply(VIEW, frame, "ts")
    again = frame.with_columns(pl.col("_offset") + n)  # the same tiles: every one merged
    store.apply(VIEW, again, "ts")
    both = pl.concat([frame, again])
    at = BASE + n * MINUTE
    cards = pl.DataFrame({"card_id": ["card_000000"]})
    assert_close(store.read(VIEW, cards, at, FEATURES), offline(both, ["card_000000"], at))


def test_late_events_within_retention_update_their_tile(store: RedisOnlineStore) -> None:
    frame = events(400, seed=4, cards=2)
    store.apply(VIEW, frame, "ts")
    late = frame.slice(0, 5).with_columns(
        pl.col("ts") - pl.duration(minutes=20), pl.col("_offset") + 10_000
    )
    store.apply(VIEW, late, "ts")
    both = pl.concat([frame, late])
    at = BASE + 3 * HOUR + MINUTE
    cards = ["card_000000", "card_000001"]
    got = store.read(VIEW, pl.DataFrame({"card_id": cards}), at, FEATURES)
    assert_close(got, offline(both, cards, at))


def test_ttl_and_pruning(store: RedisOnlineStore, redis_prefix: str) -> None:
    frame = events(300, seed=5, cards=1)
    store.apply(VIEW, frame, "ts")
    key = f"{redis_prefix}card_spend:v1:card_000000"
    ttl = store.client.pttl(key)
    assert VIEW.ttl_ms - 60_000 < ttl <= VIEW.ttl_ms
    fields_before = {f.decode() for f in store.client.hkeys(key)}
    assert any(f.startswith("60000,") for f in fields_before)
    # Two days later, one event a minute for 8 minutes: pruning runs on one new tile in 8,
    # and every older 1m tile is far out of retention (10m + 30m) and goes.
    later = pl.concat(
        frame.slice(0, 1).with_columns(
            pl.col("ts") + pl.duration(days=2, minutes=m), pl.col("_offset") + 100_000 + m
        )
        for m in range(8)
    )
    for m in range(8):
        store.apply(VIEW, later.slice(m, 1), "ts")
    minute_tiles = [f for f in map(bytes.decode, store.client.hkeys(key)) if f.startswith("60000,")]
    assert len(minute_tiles) == 8  # the new ones only


def test_lost_scripts_are_loaded_again(store: RedisOnlineStore) -> None:
    frame = events(200, seed=6, cards=2)
    store.client.script_flush()
    store.apply(VIEW, frame, "ts")
    store.client.script_flush()
    at = BASE + 3 * HOUR
    cards = ["card_000000", "card_000001"]
    assert_close(store.read(VIEW, pl.DataFrame({"card_id": cards}), at, FEATURES),
                offline(frame, cards, at))  # fmt: skip


def test_a_version_keeps_its_layout(store: RedisOnlineStore) -> None:
    store.register(VIEW, TEXT)  # the same layout again: fine
    changed = VIEW.model_copy(
        update={"aggregations": [*VIEW.aggregations[:2]]}, deep=True
    )  # country dropped, same version
    changed = FeatureView.model_validate(changed.model_dump())
    with pytest.raises(ConfigError, match="needs a new version"):
        store.register(changed, {"merchant_id"})
    bumped = FeatureView.model_validate({**changed.model_dump(), "version": 2})
    store.register(bumped, {"merchant_id"})


def test_a_reader_with_another_definition_of_the_version_is_refused(
    store: RedisOnlineStore,
) -> None:
    """Records keep only the parts their view's features read: a reader whose definition
    of the same version asks for more (a std: sums of squares the writer never stored)
    stops with the fix instead of decoding records of another layout."""
    store.apply(VIEW, events(50, seed=3), "ts")
    narrower = FeatureView.model_validate(
        {**VIEW.model_dump(), "aggregations": [
            {"column": "amount", "functions": ["count", "max"], "windows": ["10m/1m"]},
            *VIEW.model_dump()["aggregations"][1:]]}
    )  # fmt: skip
    store.client.delete(f"{store.prefix}:{VIEW.name}:v{VIEW.version}")  # a writer of `narrower`
    store.register(narrower, TEXT)
    reader = RedisOnlineStore(store.client, {"card": ["card_id"]}, prefix=store.prefix)
    with pytest.raises(ConfigError, match=r"different definitions of one version.*bump"):
        reader.read(VIEW, pl.DataFrame({"card_id": CARDS[:2]}), BASE, FEATURES)


def test_records_of_an_older_format_are_refused_with_the_fix(store: RedisOnlineStore) -> None:
    """A version written by an older featurestore (format 1: CSV records, no `format` in
    its meta hash) is neither merged into nor read as binary: writers and readers stop
    with a message naming the fix."""
    old = FeatureView.model_validate({**VIEW.model_dump(), "version": 7})
    meta = f"{store.prefix}:{old.name}:v{old.version}"
    signature = ",".join(f"{n}:{'s' if v.distinct else 'p'}" for n, v in old.values.items())
    store.client.hset(meta, mapping={"values": signature, "text": "country,merchant_id"})
    for attempt in (lambda: store.register(old, TEXT),
                    lambda: RedisOnlineStore(store.client, {"card": ["card_id"]},
                                             prefix=store.prefix).read(
                        old, pl.DataFrame({"card_id": CARDS[:2]}), BASE, FEATURES)):  # fmt: skip
        with pytest.raises(ConfigError, match=r"format 1.*bump `version`.*featurestore backfill"):
            attempt()


def test_several_views_in_one_round_trip_and_null_keys(store: RedisOnlineStore) -> None:
    frame = events(300, seed=7, cards=3)
    store.apply(VIEW, frame, "ts")
    at = BASE + 3 * HOUR
    cards = pl.DataFrame({"card_id": ["card_000000", None, "card_000002"]})
    first, second = store.read_many(
        [(VIEW, ["amount_sum_1h"]), (VIEW, ["country_last_24h", "amount_count_10m"])], cards, at
    )
    assert first.columns == ["amount_sum_1h"]
    assert second.columns == ["country_last_24h", "amount_count_10m"]
    assert first["amount_sum_1h"][1] == 0.0
    assert second["country_last_24h"][1] is None
    expected = offline(frame, ["card_000000", "card_000002"], at)
    assert first["amount_sum_1h"].gather([0, 2]).to_list() == pytest.approx(
        expected["amount_sum_1h"].to_list(), rel=1e-9
    )


def test_views_of_different_layouts_read_together_equal_each_read_alone(
    store: RedisOnlineStore,
) -> None:
    places = FeatureView.model_validate(
        {
            "name": "card_places", "source": "payments-value", "entity": "card", "owner": "o",
            "aggregations": [
                {"column": "merchant_id", "functions": ["distinct", "last"],
                 "windows": ["10m/1m", "24h/1h"]},
                {"column": "amount", "functions": ["max"], "windows": ["1h/5m"]},
            ],
        }
    )  # fmt: skip
    store.register(VIEW, TEXT)
    store.register(places, {"merchant_id"})
    frame = events(400, seed=17, cards=4)
    store.apply(VIEW, frame, "ts")
    store.apply(places, frame, "ts")
    cards = pl.DataFrame({"card_id": ["card_000003", "nobody", "card_000000", "card_000003"]})
    places_features = [f.name for f in places.features]
    for at in (BASE + 3 * HOUR, BASE + 4 * HOUR + 7 * MINUTE, BASE + 26 * HOUR):
        together = store.read_many([(places, places_features), (VIEW, FEATURES)], cards, at)
        assert_close(together[0], store.read(places, cards, at, places_features))
        assert_close(together[1], store.read(VIEW, cards, at, FEATURES))
        assert_close(together[1].gather([0, 2]),
                     offline(frame, ["card_000003", "card_000000"], at))  # fmt: skip


def test_rows_read_in_chunks_equal_rows_read_at_once(
    store: RedisOnlineStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lookup of many rows runs in chunks of rows (`store._CELLS`); the answer is the
    same as in one chunk, value for value, in row order."""
    store.register(VIEW, TEXT)
    frame = events(300, seed=5, cards=4)
    store.apply(VIEW, frame, "ts")
    cards = pl.DataFrame({"card_id": ["card_000001", "nobody", "card_000003", "card_000000",
                                      None, "card_000001", "card_000002"]})  # fmt: skip
    at = BASE + 3 * HOUR
    whole = store.lookup([(VIEW, FEATURES), (VIEW, ["country_last_24h"])], cards, at)
    monkeypatch.setattr(store_module, "_CELLS", 1)  # one row per chunk
    chunked = store.lookup([(VIEW, FEATURES), (VIEW, ["country_last_24h"])], cards, at)
    assert chunked.values == whole.values
    assert chunked.found == whole.found == [[True, False, True, True, False, True, True]] * 2
    assert chunked.newest_event_ms == whole.newest_event_ms


def test_sketches_beyond_k_merge_in_redis_as_offline(store: RedisOnlineStore) -> None:
    frame = events(3000, seed=9, cards=1).with_columns(
        pl.format("m{}", pl.int_range(pl.len()) * 7919 % 2500).alias("merchant_id")
    )
    for batch in frame.iter_slices(400):  # every batch merges into full sketches
        store.apply(VIEW, batch, "ts")
    at = BASE + 3 * HOUR
    got = store.read(VIEW, pl.DataFrame({"card_id": ["card_000000"]}), at,
                     ["merchant_id_distinct_1h"])  # fmt: skip
    want = offline(frame, ["card_000000"], at).select("merchant_id_distinct_1h")
    assert got.equals(want)
    assert got.item() > 256  # an estimate, not an exact count: the sketch was full


def test_an_error_reply_in_a_round_trip_is_raised_after_every_reply(
    store: RedisOnlineStore, redis_prefix: str
) -> None:
    """A command Redis refuses in the middle of a round trip: the error is raised once
    every reply is read, the commands around it ran, and the store's next round trip on
    the same connections reads its own replies (none left over from the failed one)."""
    text, number = f"{redis_prefix}{{k}}text", f"{redis_prefix}{{k}}number"
    store.client.set(text, "a")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        store.send([("INCR", number), ("HVALS", text), ("INCR", number)])
    assert int(store.client.get(number)) == 2
    for i in range(3):
        assert store.send([("INCR", number), ("HMGET", number + "-none", "a")]) == [3 + i, [None]]


def test_a_stored_record_the_script_cannot_merge_stops_with_the_key_and_the_fix(
    store: RedisOnlineStore,
) -> None:
    """A tile record damaged in Redis (here: cut short) makes the apply script fail on
    that entity, one of several in the call on one Redis: the store raises naming that
    key and the fix, and leaves its offset mark as it was, so nothing of the batch
    counts as applied there."""
    first = events(60, seed=5, cards=3)
    store.apply(VIEW, first, "ts")
    key = f"{store.prefix}:{VIEW.name}:v{VIEW.version}:card_000001"
    field = next(f for f in store.client.hkeys(key) if not f.startswith(b"o:"))
    store.client.hset(key, field, b"\x00" * 40)  # a record, by its length, cut short
    mark = store.client.hget(key, "o:payments:0")
    again = first.with_columns(pl.col("_offset") + 1000)  # the same tiles, new offsets
    with pytest.raises(OnlineMergeError, match=rf"failed on {key} .*delete that key.*backfill"):
        store.apply(VIEW, again, "ts")
    assert store.client.hget(key, "o:payments:0") == mark


def test_round_trips_read_through_a_roomy_receive_buffer(store: RedisOnlineStore) -> None:
    """A lookup's replies arrive at once: the store's connections get a receive buffer
    that keeps the TCP window open for them (`store._roomy`), once per socket."""
    if not store._packs:
        pytest.skip("a cluster client routes through redis-py's pipeline")
    store.send([("PING",)])
    connection = store.client.connection_pool.get_connection()
    try:
        granted = connection._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    finally:
        store.client.connection_pool.release(connection)
    limit = int(Path("/proc/sys/net/core/rmem_max").read_text())
    assert granted >= min(store_module._RECEIVE_BUFFER, limit)


def test_a_view_written_without_registering_is_readable_by_another_store(
    store: RedisOnlineStore,
) -> None:
    """`apply` records the view's layout (text values, format) before its first write, so
    a reader that never saw the writer reads the records."""
    fresh = VIEW.model_copy(update={"name": "card_spend_unregistered"})
    writer = RedisOnlineStore(store.client, {"card": ["card_id"]}, prefix=store.prefix)
    frame = events(200, seed=3, cards=3)
    writer.apply(fresh, frame, "ts")
    reader = RedisOnlineStore(store.client, {"card": ["card_id"]}, prefix=store.prefix)
    at = BASE + 3 * HOUR
    cards = ["card_000000", "card_000002"]
    got = reader.read(fresh, pl.DataFrame({"card_id": cards}), at, FEATURES)
    assert_close(got, offline(frame, cards, at))

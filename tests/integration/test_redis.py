"""Redis as the online store uses it: pipelines, MULTI/EXEC, and a single-key Lua
script that applies an update once per source offset."""

from __future__ import annotations

import pytest
import redis

pytestmark = pytest.mark.integration

# Apply HINCRBY increments to one hash unless this partition's offset was applied.
# KEYS[1] = hash; ARGV[1] = offset field; ARGV[2] = offset; then field/increment pairs.
GUARDED_INCREMENT = """
local applied = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) <= applied then return 0 end
for i = 3, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def test_pipeline_batches_commands_in_one_round_trip(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    pipe = redis_client.pipeline(transaction=False)
    for i in range(100):
        pipe.hset(f"{redis_prefix}e{i}", mapping={"count": i, "sum": i * 2.5})
        pipe.expire(f"{redis_prefix}e{i}", 60)
    results = pipe.execute()
    assert len(results) == 200
    assert all(r == 2 for r in results[0::2])  # two new fields per hash

    read = redis_client.pipeline(transaction=False)
    for i in range(100):
        read.hgetall(f"{redis_prefix}e{i}")
    hashes = read.execute()
    assert [int(h[b"count"]) for h in hashes] == list(range(100))
    assert float(hashes[7][b"sum"]) == 17.5
    assert 0 < redis_client.ttl(f"{redis_prefix}e0") <= 60


def test_transaction_pipeline_is_atomic(redis_client: redis.Redis, redis_prefix: str) -> None:
    alias = f"{redis_prefix}alias"
    redis_client.set(alias, "v1")
    with redis_client.pipeline(transaction=True) as tx:
        tx.set(alias, "v2")
        tx.rpush(f"{redis_prefix}history", "v1->v2")
        tx.execute()
    assert redis_client.get(alias) == b"v2"
    assert redis_client.lrange(f"{redis_prefix}history", 0, -1) == [b"v1->v2"]


def test_lua_script_skips_replayed_offsets(redis_client: redis.Redis, redis_prefix: str) -> None:
    apply = redis_client.register_script(GUARDED_INCREMENT)
    key = f"{redis_prefix}card-1"
    assert apply(keys=[key], args=["_off:0", 10, "count", 3, "sum", 30]) == 1
    # A replay of the same batch (same offset) and an older one change nothing.
    assert apply(keys=[key], args=["_off:0", 10, "count", 3, "sum", 30]) == 0
    assert apply(keys=[key], args=["_off:0", 7, "count", 1, "sum", 1]) == 0
    assert apply(keys=[key], args=["_off:0", 11, "count", 1, "sum", 5]) == 1
    # Another partition's offsets are guarded independently.
    assert apply(keys=[key], args=["_off:1", 2, "count", 1, "sum", 1]) == 1
    state = redis_client.hgetall(key)
    assert state == {b"_off:0": b"11", b"_off:1": b"2", b"count": b"5", b"sum": b"36"}

    # Pipelined EVALSHA for many entities in one round trip, as the online store does.
    pipe = redis_client.pipeline(transaction=False)
    for i in range(50):
        apply(keys=[f"{redis_prefix}card-{i + 2}"], args=["_off:0", 1, "count", i], client=pipe)
    assert pipe.execute() == [1] * 50
    assert int(redis_client.hget(f"{redis_prefix}card-51", "count") or 0) == 49

"""The apply's script calls: each call's arguments are exactly its keys' slices of the
batch's columns, in the layout `apply.lua` reads (no Redis here)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from featurestore.online.store import _Segments

FIXED = ("ttl", "kinds", "laws", 256)


def segments(counts: list[int], prune_counts: list[int]) -> _Segments:
    s, p = sum(counts), sum(prune_counts)
    return _Segments(
        keys=[f"k{i}" for i in range(len(counts))], counts=counts, prune_counts=prune_counts,
        ofields=[f"o{i}" for i in range(s)], lows=list(range(s)), highs=list(range(1, s + 1)),
        fields=[f"f{i}" for i in range(s)], records=[bytes([i % 256]) * 40 for i in range(s)],
        prefixes=[f"p{j}," for j in range(p)], oldest=list(range(100, 100 + p)),
    )  # fmt: skip


def parse(command: tuple[Any, ...]) -> dict[str, list[Any]]:
    """A command read back as `apply.lua` reads its KEYS and ARGV."""
    assert command[:2] == ("EVALSHA", "sha")
    n = command[2]
    keys, argv = list(command[3 : 3 + n]), list(command[3 + n :])
    assert tuple(argv[:4]) == FIXED
    s, p = argv[4], argv[5]
    counts, prunes = argv[6 : 6 + n], argv[6 + n : 6 + 2 * n]
    base = 6 + 2 * n
    columns = [argv[base + i * s : base + (i + 1) * s] for i in range(5)]
    tail = argv[base + 5 * s :]
    assert len(tail) == 2 * p
    assert sum(counts) == s
    assert sum(prunes) == p
    return {"keys": keys, "counts": counts, "prunes": prunes, "ofields": columns[0],
            "lows": columns[1], "highs": columns[2], "fields": columns[3],
            "records": columns[4], "prefixes": tail[:p], "oldest": tail[p:]}  # fmt: skip


@given(
    st.lists(st.tuples(st.integers(1, 5), st.integers(1, 3)), min_size=1, max_size=30),
    st.integers(1, 7),
)
def test_calls_split_the_columns_by_key_and_lose_nothing(
    shape: list[tuple[int, int]], per_call: int
) -> None:
    whole = segments([c for c, _ in shape], [p for _, p in shape])
    calls = whole.calls("sha", FIXED, per_call)
    assert all(len(keys) <= per_call for keys, _ in calls)
    parsed = [parse(command) for _, command in calls]
    for (keys, _), part in zip(calls, parsed, strict=True):
        assert part["keys"] == keys
    joined = {name: [x for part in parsed for x in part[name]] for name in parsed[0]}
    assert joined["keys"] == whole.keys
    assert joined["counts"] == whole.counts
    assert joined["prunes"] == whole.prune_counts
    for name in ("ofields", "lows", "highs", "fields", "records", "prefixes", "oldest"):
        assert joined[name] == getattr(whole, name), name

"""Tile records merged in the consumer: the merge laws of `featurestore.features.spec`
on binary records (`featurestore.online.layout`), vectorised over a batch with numpy.

The consumer that writes an entity's hash reads the stored records of the tiles its
batch touches, merges its new records into them here, and writes the results back
(`featurestore.online.store`); Redis only stores, so it spends no time decoding.

Laws, per part of the fixed part (NaN is null, and null merges as the absent side):
add ``a + b`` (the stored record on the left, then each new one in source-offset
order: the order the Polars engine folds in, see `aggregates.combine_exprs`), min and
max, and the latest value (value, time, offset) taken from the record with the higher
(time, offset); a tile's newest event time takes the max; a distinct sketch keeps the
K smallest distinct hashes of both; a text ``last`` goes with its latest value.

Invariants: merging is only ever of records of one layout (`Record`); a record that is
not of it is reported by `damaged` before anything is merged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from featurestore.features.sketch import K
from featurestore.features.spec import LATEST
from featurestore.online.layout import NEWEST, Record


def merge_grouped(
    record: Record, heads: Sequence[bytes], groups: np.ndarray, followers: Sequence[bytes]
) -> list[bytes]:
    """Per group, its head with its followers merged into it left to right: ``groups``
    (ascending) names each follower's head. Every group's first follower is merged in
    one vectorised step, then every second..."""
    out = list(heads)
    if len(followers) == 0:
        return out
    rank = np.arange(len(groups)) - np.searchsorted(groups, groups)
    for step in range(int(rank.max()) + 1):
        at = np.flatnonzero(rank == step).tolist()
        into = groups[at].tolist()
        merged = merge_pairs(record, [out[i] for i in into], [followers[j] for j in at])
        for i, value in zip(into, merged, strict=True):
            out[i] = value
    return out


def damaged(record: Record, records: Sequence[bytes]) -> list[int]:
    """The positions of ``records`` that are not records of this layout: a fixed part
    of another size, or sketch and text parts that do not add up to the length."""
    size = 8 * record.width
    lengths = np.fromiter(map(len, records), dtype=np.int64, count=len(records))
    if record.fixed_only:
        return np.flatnonzero(lengths != size).tolist()
    whole = lengths >= size
    bad = ~whole
    kept = [r for r, ok in zip(records, whole.tolist(), strict=True) if ok]
    if kept:
        matrix = record.matrix(kept)
        sizes = matrix[:, [record.slots[(n, "size")] for n in record.sketched]]
        texts = matrix[:, [record.slots[(n, "last")] for n in record.texts]]
        sane = np.isfinite(sizes).all(axis=1) & (sizes >= 0).all(axis=1)
        sane &= (np.isnan(texts) | (texts >= 0)).all(axis=1)
        expected = size + 8 * np.nansum(sizes, axis=1) + np.nansum(texts, axis=1)
        bad[whole] = ~sane | (expected != lengths[whole])
    return np.flatnonzero(bad).tolist()


def merge_pairs(record: Record, left: Sequence[bytes], right: Sequence[bytes]) -> list[bytes]:
    """``right[i]`` merged into ``left[i]``, for every i at once."""
    if not left:
        return []
    a = record.matrix(left).copy()
    b = record.matrix(right)
    a[:, NEWEST] = _pick(a[:, NEWEST], b[:, NEWEST], np.greater)
    newer: dict[str, np.ndarray] = {}
    for name in record.names:
        parts = {p.name: p for p in record.parts[name]}
        if "last_time" in parts:
            t, o = record.slots[(name, "last_time")], record.slots[(name, "last_offset")]
            at, bt = a[:, t], b[:, t]
            newer[name] = ~np.isnan(bt) & (
                np.isnan(at) | (bt > at) | ((bt == at) & (b[:, o] > a[:, o]))
            )
        for part in parts.values():
            i = record.slots[(name, part.name)]
            if part.merge == "add":
                a[:, i] = _add(a[:, i], b[:, i])
            elif part.merge == "min":
                a[:, i] = _pick(a[:, i], b[:, i], np.less)
            elif part.merge == "max":
                a[:, i] = _pick(a[:, i], b[:, i], np.greater)
        if name in newer:
            rows = np.flatnonzero(newer[name])
            for latest in LATEST:
                slot = record.slots[(name, latest)]
                a[rows, slot] = b[rows, slot]
    if record.fixed_only:
        return _rows(a)
    hashes, sizes = _unions(record, left, right)
    for j, name in enumerate(record.sketched):
        a[:, record.slots[(name, "size")]] = sizes[:, j]
    texts = _texts(record, left, right, newer)
    fixed = _rows(a)
    ends = np.cumsum(8 * sizes.sum(axis=1)).tolist()
    starts = [0, *ends[:-1]]
    buffer = hashes.astype("<f8").tobytes()
    return [b"".join((fixed[i], buffer[starts[i] : ends[i]], *texts[i])) for i in range(len(fixed))]


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(a), b, np.where(np.isnan(b), a, a + b))


def _pick(a: np.ndarray, b: np.ndarray, wins: np.ufunc) -> np.ndarray:
    """``b`` where it wins over ``a`` or ``a`` is null; ``a`` where ``b`` is null."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(a) | (~np.isnan(b) & wins(b, a)), b, a)


def _rows(matrix: np.ndarray) -> list[bytes]:
    contiguous = np.ascontiguousarray(matrix, dtype="<f8")
    rows = contiguous.view(np.dtype((np.void, 8 * contiguous.shape[1]))).ravel()
    return [row.tobytes() for row in rows]


def _unions(
    record: Record, left: Sequence[bytes], right: Sequence[bytes]
) -> tuple[np.ndarray, np.ndarray]:
    """Per pair and sketched value, the K smallest distinct hashes of both sides: all
    hashes (pair after pair, value after value, ascending) and their counts (pairs x
    sketched values)."""
    n, s = len(left), len(record.sketched)
    groups, flat = [], []
    for side in (left, right):
        sizes = record.sketch_sizes(record.matrix(side))
        flat.append(record.hashes(side, sizes))
        groups.append(np.repeat(np.arange(n * s), sizes.ravel()))
    group, value = np.concatenate(groups), np.concatenate(flat)
    order = np.lexsort((value, group))
    group, value = group[order], value[order]
    distinct = np.ones(len(value), dtype=bool)
    distinct[1:] = (group[1:] != group[:-1]) | (value[1:] != value[:-1])
    group, value = group[distinct], value[distinct]
    first = np.searchsorted(group, group, side="left")
    keep = (np.arange(len(group)) - first) < K
    group, value = group[keep], value[keep]
    counts = np.bincount(group, minlength=n * s).reshape(n, s)
    return value, counts


def _texts(
    record: Record, left: Sequence[bytes], right: Sequence[bytes], newer: dict[str, np.ndarray]
) -> list[list[bytes]]:
    """Per pair, the bytes of each text ``last``: the newer side's."""
    if not record.texts:
        return [[] for _ in left]
    spans = [record.text_spans(record.matrix(side)) for side in (left, right)]
    out: list[list[bytes]] = []
    for i in range(len(left)):
        texts = []
        for k, name in enumerate(record.texts):
            side = 1 if newer[name][i] else 0
            starts, lengths = spans[side]
            length = lengths[i, k]
            if length != length:  # noqa: PLR0124 - NaN: null
                texts.append(b"")
                continue
            start = int(starts[i, k])
            texts.append((right if side else left)[i][start : start + int(length)])
        out.append(texts)
    return out

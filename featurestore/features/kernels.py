"""The loops of the small-read execution (`featurestore.features.small`), compiled.

A lookup of one entity merges about a hundred tile records: as numpy steps, each on a
tiny array, it paid about a hundred fixed costs of a few microseconds each (most of the
lookup). These loops do the same steps, in the same order, compiled by numba (to
machine code, cached on disk next to this file, or in numba's user cache when that is
not writable: only the first lookup after an install compiles, for several seconds;
`small.warm` does it ahead).

They implement no aggregation law of their own beyond the merge laws of
`featurestore.features.spec` (``add``: a sum folded newest tile first from 0.0;
``min``/``max``: nulls skipped, on ties the newest tile's value kept, as the Polars
engine keeps the last of its rows sorted oldest tile first; ``latest``: the newest tile
holding a value; ``union``: the K smallest distinct hashes). Values are finished by
`finish`, which runs `spec.finish` as traced into instructions
(`featurestore.features.small._Traced`), each op as `spec.Ops` defines it.
tests/unit/features/test_small_read.py proves them equal to the Polars engine bit for
bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from featurestore.features.sketch import SCALE, K
from featurestore.features.small import (
    LEAF_KTH,
    LEAF_LATEST,
    LEAF_MERGED,
    LEAF_SIZE,
    OP_ADD,
    OP_AT_LEAST_ZERO,
    OP_CONST,
    OP_DIV,
    OP_ESTIMATE,
    OP_GE,
    OP_GT,
    OP_MUL,
    OP_SQRT,
    OP_SUB,
    OP_WHERE,
    OP_ZERO_IF_NULL,
    VIEW_KEY,
)

# numba keys its on-disk cache on this file alone, and compiles the constants these loops
# take from other modules into the cached code. So they are written here too: changing
# one changes this file, which recompiles (checked at import).
_COMPILED_WITH = {
    "VIEW_KEY": 1099511627776.0, "K": 256, "SCALE": 2.296835809958953e18,
    "OP": tuple(range(12)), "LEAF": tuple(range(4)),
}  # fmt: skip
_NOW = {
    "VIEW_KEY": VIEW_KEY, "K": K, "SCALE": SCALE,
    "OP": (OP_CONST, OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_GT, OP_GE, OP_ZERO_IF_NULL,
           OP_WHERE, OP_AT_LEAST_ZERO, OP_SQRT, OP_ESTIMATE),
    "LEAF": (LEAF_MERGED, LEAF_LATEST, LEAF_SIZE, LEAF_KTH),
}  # fmt: skip
if _COMPILED_WITH != _NOW:
    raise ImportError(
        f"featurestore.features.kernels was written for {_COMPILED_WITH}, and the constants "
        f"it imports are now {_NOW}: update _COMPILED_WITH in kernels.py (numba's cache of "
        "the compiled loops is keyed on that file)"
    )


@njit(cache=True, nogil=True)
def stack(  # noqa: PLR0917 - numba takes no keyword-only arguments
    buffer: np.ndarray,  # every record's bytes, one after the other (uint8)
    starts: np.ndarray,  # each record's first byte in ``buffer``
    lengths: np.ndarray,  # each record's length in bytes
    counts: np.ndarray,  # records per (view, row) cell, view-major
    n_rows: int,
    widths: np.ndarray,  # (views,): the fixed part, in doubles
    exact: np.ndarray,  # (views,): whether a record is its fixed part only
    width: int,  # the matrix's: the widest fixed part, then a NaN and a zero column
) -> tuple[np.ndarray, int]:
    """Every record's fixed part (little-endian doubles) as a row of ONE matrix, padded
    with NaN, its last column 0.0; and the first view with a record of another size
    (shorter than its fixed part, or longer when it holds nothing else), -1 if none."""
    matrix = np.empty((starts.shape[0], width))
    shifted = _shifted(buffer)
    r = 0
    for cell in range(counts.shape[0]):
        view = cell // n_rows
        size = 8 * widths[view]
        for _ in range(counts[cell]):
            if lengths[r] < size or (exact[view] and lengths[r] != size):
                return matrix, view
            doubles, at = shifted[starts[r] & 7], starts[r] >> 3
            for c in range(widths[view]):
                matrix[r, c] = doubles[at + c]
            for c in range(widths[view], width - 1):
                matrix[r, c] = np.nan
            matrix[r, width - 1] = 0.0
            r += 1
    return matrix, -1


@njit(cache=True, nogil=True)
def _shifted(buffer: np.ndarray) -> tuple[np.ndarray, ...]:
    """The bytes of ``buffer`` as doubles, read from each of the 8 first bytes: the
    double at byte ``b`` is ``_shifted(buffer)[b & 7][b >> 3]`` (records follow each
    other unaligned; a view per record cost more than the copy)."""
    n = buffer.shape[0]
    return (
        buffer[0 : (n // 8) * 8].view(np.float64),
        buffer[1 : 1 + ((n - 1) // 8) * 8].view(np.float64),
        buffer[2 : 2 + ((n - 2) // 8) * 8].view(np.float64),
        buffer[3 : 3 + ((n - 3) // 8) * 8].view(np.float64),
        buffer[4 : 4 + ((n - 4) // 8) * 8].view(np.float64),
        buffer[5 : 5 + ((n - 5) // 8) * 8].view(np.float64),
        buffer[6 : 6 + ((n - 6) // 8) * 8].view(np.float64),
        buffer[7 : 7 + ((n - 7) // 8) * 8].view(np.float64),
    )


@njit(cache=True, nogil=True)
def scatter(  # noqa: PLR0917 - numba takes no keyword-only arguments
    matrix: np.ndarray,  # (records, width): every record's fixed part, as doubles
    counts: np.ndarray,  # records per (view, row) cell, view-major
    n_rows: int,
    at: int,  # request time, epoch ms
    keys: np.ndarray,  # per (view, granularity): view * VIEW_KEY + tile ms, ascending
    depths: np.ndarray,  # per (view, granularity): tiles read
    sources: np.ndarray,  # (keys, reads): slot read in the record
    targets: np.ndarray,  # (keys, reads): dense column written
    latest: np.ndarray,  # (keys, latest reads): latest value index
    columns: int,  # dense columns (the spare one included)
    laws: np.ndarray,  # end of the add, min and max columns (they come in this order)
    raw_counts: np.ndarray,  # per latest value: its count's dense column
    newest_slot: int,
) -> tuple[Any, ...]:
    """Every record into the dense (column, row, age) array, accumulated along the ages
    (see `featurestore.features.small`); per record its (view, granularity) row of the
    tables (-1: outside every window), age, row and view; per latest value, row and age
    the record holding it (-1: none); per (view, row) the newest event time (NaN:
    none); per latest value and row, the newest age holding a value and whether any
    does; and the depth (ages) of the array."""
    where, ages, rows, views, newest, depth = _place(matrix, counts, n_rows, at, keys,
                                                     depths, newest_slot)  # fmt: skip
    dense = np.empty((columns, n_rows, depth))
    dense[: laws[0]] = 0.0  # an absent tile adds nothing
    dense[laws[0] :] = np.nan  # and is null for everything else
    which = np.full((raw_counts.shape[0] + 1, n_rows, depth), -1, np.int64)
    for r in range(matrix.shape[0]):
        w = where[r]
        if w >= 0:
            for s in range(sources.shape[1]):
                dense[targets[w, s], rows[r], ages[r]] = matrix[r, sources[w, s]]
            for s in range(latest.shape[1]):
                which[latest[w, s], rows[r], ages[r]] = r
    _accumulate(dense, laws)
    held_age = np.zeros((raw_counts.shape[0], n_rows), np.int64)
    held_any = np.zeros((raw_counts.shape[0], n_rows), np.bool_)
    for v in range(raw_counts.shape[0]):
        for row in range(n_rows):
            for a in range(depth):
                if dense[raw_counts[v], row, a] > 0:
                    held_age[v, row], held_any[v, row] = a, True
                    break
    return dense, which, where, ages, rows, views, newest, held_age, held_any, depth


@njit(cache=True, nogil=True)
def _place(  # noqa: PLR0917 - numba takes no keyword-only arguments
    matrix: np.ndarray, counts: np.ndarray, n_rows: int, at: int, keys: np.ndarray,
    depths: np.ndarray, newest_slot: int,
) -> tuple[Any, ...]:  # fmt: skip
    """Per record: its row of the tables (-1: outside every window), age, row and view;
    per (view, row) cell the newest event time; and the depth the windows need."""
    n = matrix.shape[0]
    where = np.full(n, -1, np.int64)
    ages = np.zeros(n, np.int64)
    rows = np.zeros(n, np.int64)
    views = np.zeros(n, np.int64)
    newest = np.full(counts.shape[0], np.nan)
    depth = np.int64(1)
    r = 0
    for cell in range(counts.shape[0]):
        for _ in range(counts[cell]):
            views[r], rows[r] = cell // n_rows, cell % n_rows
            t = matrix[r, newest_slot]
            if t == t and not newest[cell] >= t:  # noqa: PLR0124 - NaN: no value
                newest[cell] = t
            g = matrix[r, 0]
            key = views[r] * VIEW_KEY + g
            w = np.searchsorted(keys, key)
            if w < keys.shape[0] and keys[w] == key:
                age = at // np.int64(g) - np.int64(matrix[r, 1])
                if 0 <= age < depths[w]:
                    where[r], ages[r] = w, age
                    if age >= depth:
                        depth = age + 1
            r += 1
    return where, ages, rows, views, newest, depth


@njit(cache=True, nogil=True)
def _accumulate(dense: np.ndarray, laws: np.ndarray) -> None:
    """Each add, min and max column folded along the ages, newest first: a running sum
    from 0.0; a running min or max that skips nulls and keeps the newer value on ties."""
    for c in range(laws[2]):
        for row in range(dense.shape[1]):
            acc = dense[c, row, 0]
            for a in range(1, dense.shape[2]):
                x = dense[c, row, a]
                if c < laws[0]:
                    acc += x
                elif x == x and (  # noqa: PLR0124 - NaN: null, skipped
                    acc != acc or (x < acc if c < laws[1] else x > acc)  # noqa: PLR0124
                ):
                    acc = x
                dense[c, row, a] = acc


@njit(cache=True, nogil=True)
def _sketched(  # noqa: PLR0917
    shifted: tuple[np.ndarray, ...], starts: np.ndarray, matrix: np.ndarray, where: np.ndarray,
    rows: np.ndarray, views: np.ndarray, n_rows: int, sizes: np.ndarray, widths: np.ndarray,
    sketches: np.ndarray, ages: np.ndarray, fill: np.ndarray, hashes: np.ndarray,
    hash_ages: np.ndarray, counting: bool, total: int,
) -> bool:  # fmt: skip
    """Walk every asked sketch of the kept records: count each (sketch, row) cell's
    hashes into ``fill`` (``counting``), or place them at ``fill`` (each cell's next
    position) in ``hashes`` and ``hash_ages``. False when a record's sketches run past
    its end (``total``: the buffer's bytes)."""
    for r in range(where.shape[0]):
        w = where[r]
        if w < 0:
            continue
        at = starts[r] + 8 * widths[views[r]]
        end = starts[r + 1] if r + 1 < starts.shape[0] else total
        for v in range(sizes.shape[1]):
            size = np.int64(matrix[r, sizes[views[r], v]])
            if at + 8 * size > end:
                return False
            s = sketches[w, v]
            if s >= 0 and size > 0:
                cell = s * n_rows + rows[r]
                if counting:
                    fill[cell] += size
                else:
                    for h in range(size):
                        first = at + 8 * h
                        hashes[fill[cell]] = shifted[first & 7][first >> 3]
                        hash_ages[fill[cell]] = ages[r]
                        fill[cell] += 1
            if size > 0:
                at += 8 * size
    return True


@njit(cache=True, nogil=True)
def distinct(  # noqa: PLR0917
    buffer: np.ndarray,  # every record's bytes, one after the other (uint8)
    starts: np.ndarray,  # each record's first byte in ``buffer``
    matrix: np.ndarray,
    where: np.ndarray,  # from `scatter`
    ages: np.ndarray,
    rows: np.ndarray,
    views: np.ndarray,
    n_rows: int,
    sizes: np.ndarray,  # (views, sketched values): the sketch size slot
    widths: np.ndarray,  # (views,): the fixed part, in doubles
    sketches: np.ndarray,  # (keys, sketched values): sketch index, -1 when not asked
    n_sketches: int,
    asked: np.ndarray,  # per distinct feature: its sketch
    tiles: np.ndarray,  # per distinct feature: its window's tiles
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct feature and row: the number of distinct hashes in its window (each
    hash at the newest age it was seen), and the K-th smallest of them (0.0 when fewer
    than K). A sketch's hashes follow the record's fixed part, value after value, as
    little-endian doubles."""
    cells = n_sketches * n_rows
    held = np.zeros(cells + 1, np.int64)
    none = np.empty(0)
    shifted = _shifted(buffer)
    counted = _sketched(shifted, starts, matrix, where, rows, views, n_rows, sizes, widths,
                        sketches, ages, held, none, np.empty(0, np.int64), True,
                        buffer.shape[0])  # fmt: skip
    if not counted:
        raise ValueError("an online record's sketches run past its end")
    held = np.cumsum(held) - held  # each cell's first position; held[cells]: the total
    hashes = np.empty(held[cells])
    hash_ages = np.empty(held[cells], np.int64)
    _sketched(shifted, starts, matrix, where, rows, views, n_rows, sizes, widths, sketches,
              ages, held[:cells].copy(), hashes, hash_ages, False, buffer.shape[0])  # fmt: skip
    size_out = np.zeros((asked.shape[0], n_rows))
    kth = np.zeros((asked.shape[0], n_rows))
    for cell in range(cells):
        lo, hi = held[cell], held[cell + 1]
        if hi == lo:
            continue
        order = np.argsort(hashes[lo:hi], kind="mergesort") + lo
        unique = np.empty(hi - lo)
        newest = np.empty(hi - lo, np.int64)
        m = -1
        for i in order:  # each hash once, at its newest (smallest) age
            if m < 0 or hashes[i] != unique[m]:
                m += 1
                unique[m], newest[m] = hashes[i], hash_ages[i]
            else:
                newest[m] = min(newest[m], hash_ages[i])
        sketch, row = cell // n_rows, cell % n_rows
        for f in range(asked.shape[0]):
            if asked[f] == sketch:
                seen = 0
                for j in range(m + 1):
                    if newest[j] < tiles[f]:
                        seen += 1
                        if seen == k:
                            kth[f, row] = unique[j]
                size_out[f, row] = seen
    return size_out, kth


@njit(cache=True, nogil=True)
def texts(  # noqa: PLR0917
    held_age: np.ndarray,  # from `scatter`
    held_any: np.ndarray,
    which: np.ndarray,
    matrix: np.ndarray,
    values: np.ndarray,  # per text feature: its latest value index
    tiles: np.ndarray,  # per text feature: its window's tiles
    views: np.ndarray,  # per text feature: its view
    lengths: np.ndarray,  # per text feature: its text's length slot (the ``last`` slot)
    earlier: np.ndarray,  # (features, texts before it): their length slots, padded
    sizes: np.ndarray,  # (views, sketched values): the sketch size slots, padded
    widths: np.ndarray,  # (views,): the fixed part, in doubles
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per text ``last`` feature and row: the record holding its newest value in the
    window (-1: none), where its text starts in that record (after the fixed part, the
    sketches and the texts before it; a null text takes no bytes) and its length (NaN:
    null)."""
    n_rows = held_age.shape[1]
    chosen = np.full((values.shape[0], n_rows), -1, np.int64)
    starts = np.zeros((values.shape[0], n_rows))
    length = np.full((values.shape[0], n_rows), np.nan)
    for f in range(values.shape[0]):
        v, view = values[f], views[f]
        for row in range(n_rows):
            age = held_age[v, row]
            if not held_any[v, row] or age >= tiles[f]:
                continue
            r = which[v, row, age]
            hashes = 0.0
            for s in range(sizes.shape[1]):
                hashes += matrix[r, sizes[view, s]]
            before = 0.0
            for e in range(earlier.shape[1]):
                x = matrix[r, earlier[f, e]]
                if x > 0.0:  # NaN: a null text, no bytes
                    before += x
            chosen[f, row] = r
            starts[f, row] = 8 * (widths[view] + hashes) + before
            length[f, row] = matrix[r, lengths[f]]
    return chosen, starts, length


# error_model="numpy": a division by zero gives inf or NaN, as numpy and Polars do.
@njit(cache=True, nogil=True, error_model="numpy")
def finish(  # noqa: PLR0917, PLR0912 - one interpreter loop over the op codes
    code: np.ndarray,  # (instructions, 4): op, destination, a, b (`small._Traced`)
    constants: np.ndarray,
    spans: np.ndarray,  # per feature: its aggregation's [first, end) instruction
    leaves: np.ndarray,  # (features, leaves, 4): kind, a, b, c; kind -1 pads
    roots: np.ndarray,  # per feature: its value's register
    registers: int,
    dense: np.ndarray,  # from `scatter`
    depth: int,
    held_age: np.ndarray,
    held_any: np.ndarray,
    sizes: np.ndarray,  # from `distinct`: per distinct feature and row
    kths: np.ndarray,
) -> np.ndarray:
    """Per feature and entity row, its value: its leaves loaded (a merged part at its
    window's last age, +0.0 for a sum, whose -0.0 fold is 0.0; a latest part from the
    newest age holding one inside the window, else NaN; a sketch's size and K-th hash),
    then its aggregation's instructions run, `spec.finish` op for op."""
    out = np.empty((roots.shape[0], dense.shape[1]))
    reg = np.empty(max(registers, 1))
    for f in range(roots.shape[0]):
        for row in range(dense.shape[1]):
            for k in range(leaves.shape[1]):
                kind, a, b, c = leaves[f, k, 0], leaves[f, k, 1], leaves[f, k, 2], leaves[f, k, 3]
                if kind == LEAF_MERGED:  # a: dense column, b: window tiles, c: a sum
                    x = dense[a, row, min(b, depth) - 1]
                    reg[k] = x + 0.0 if c else x
                elif kind == LEAF_LATEST:  # a: raw column, b: latest value, c: window tiles
                    age = held_age[b, row]
                    reg[k] = dense[a, row, age] if held_any[b, row] and age < c else np.nan
                elif kind == LEAF_SIZE:
                    reg[k] = sizes[a, row]
                elif kind == LEAF_KTH:
                    reg[k] = kths[a, row]
            for i in range(spans[f, 0], spans[f, 1]):
                op, d, a, b = code[i, 0], code[i, 1], code[i, 2], code[i, 3]
                x = reg[a]
                if op == OP_CONST:
                    reg[d] = constants[a]
                elif op == OP_ADD:
                    reg[d] = x + reg[b]
                elif op == OP_SUB:
                    reg[d] = x - reg[b]
                elif op == OP_MUL:
                    reg[d] = x * reg[b]
                elif op == OP_DIV:
                    reg[d] = x / reg[b]
                elif op == OP_GT:
                    reg[d] = 1.0 if x > reg[b] else 0.0
                elif op == OP_GE:
                    reg[d] = 1.0 if x >= reg[b] else 0.0
                elif op == OP_ZERO_IF_NULL:
                    reg[d] = 0.0 if x != x else x  # noqa: PLR0124 - NaN: null
                elif op == OP_WHERE:
                    reg[d] = reg[b] if x != 0.0 else np.nan
                elif op == OP_AT_LEAST_ZERO:  # numpy's fmax(x, 0.0): a null is 0.0
                    reg[d] = x if x >= 0.0 else 0.0
                elif op == OP_SQRT:
                    reg[d] = np.sqrt(x)
                elif op == OP_ESTIMATE:  # a: the size, a + 1: the K-th hash
                    reg[d] = x if x < K else np.rint(SCALE / (reg[a + 1] + 1.0))
            out[f, row] = reg[roots[f]]
    return out

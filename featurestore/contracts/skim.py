"""A walk over the Avro bodies of a flat record schema, compiled by numba: which bodies
do not even parse as one record of it (a union branch that is neither 0 nor 1, an enum
index out of range, a varint longer than its type allows, a length running past the
body, bytes left over at its end).

It only steers the batch path (`featurestore.contracts.avro_block`): those bodies go
straight to the per-record path, which names what is wrong with each, instead of
making ``read_avro`` fail on whole blocks and the blocks be halved until they are found
(with 1% bad records, that search was a quarter of a contract-only batch). A body the
walk passes is still read by ``read_avro`` and trusted only under the block's proof;
one it fails goes per record: a mistake here costs time, never a wrong value. Its codes,
per item of a record (`avro_block._Item.skim`), are below.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numba import njit

# A union's branch index (the item's argument: the null branch, 0 or 1): the next item
# is absent when it is the null branch.
BRANCH: Final = 0
BOOLEAN: Final = 1  # one byte, 0 or 1
ENUM: Final = 2  # an index below the argument (the number of symbols)
VARINT: Final = 3  # an int or long: a varint of at most the argument's bytes
SPAN: Final = 4  # a string or bytes: a length, then as many bytes
FIXED: Final = 5  # the argument's bytes: float, double, fixed
CODES: Final = {"branch": BRANCH, "boolean": BOOLEAN, "enum": ENUM, "varint": VARINT,
                "span": SPAN, "fixed": FIXED}  # fmt: skip


@njit(cache=True, nogil=True)
def unparsed(
    buffer: np.ndarray,  # the bodies, one after the other (uint8)
    starts: np.ndarray,  # each body's first byte
    lengths: np.ndarray,  # each body's length
    kinds: np.ndarray,  # per item: its code
    arguments: np.ndarray,  # per item: its code's argument
) -> np.ndarray:
    """The indexes of the bodies that do not walk as exactly one record."""
    bad = np.zeros(starts.shape[0], np.bool_)
    for r in range(starts.shape[0]):
        at, end = starts[r], starts[r] + lengths[r]
        absent = False
        for k in range(kinds.shape[0]):
            if absent:  # the value of a union whose null branch was read
                absent = False
                continue
            if kinds[k] == FIXED:
                at += arguments[k]
            else:
                z, n, at = _varint(buffer, at, end)
                if not _fits(kinds[k], arguments[k], z, n, end - at):
                    at = end + 1
                elif kinds[k] == SPAN:
                    at += z // 2
                absent = kinds[k] == BRANCH and z // 2 == arguments[k]
            if at > end:
                break
        bad[r] = at != end
    return np.flatnonzero(bad)


@njit(cache=True, nogil=True)
def _varint(buffer: np.ndarray, at: int, end: int) -> tuple[int, int, int]:
    """The zigzag varint at ``at``: its value, its bytes (0: it runs past ``end`` or past
    10 bytes) and where it ends."""
    z, n = 0, 0
    while at < end and n < 10:
        byte = int(buffer[at])
        if n < 9:
            z |= (byte & 0x7F) << (7 * n)
        at, n = at + 1, n + 1
        if byte < 0x80:
            return z, n, at
    return z, 0, at


@njit(cache=True, nogil=True)
def _fits(kind: int, argument: int, z: int, n: int, left: int) -> bool:
    """Whether a varint (value ``z`` of ``n`` bytes; ``left`` bytes follow it in the
    body) is a valid item of ``kind``."""
    if n == 0:
        return False
    if kind == BRANCH:
        return n == 1 and z in (0, 2)
    if kind == BOOLEAN:
        return n == 1 and z <= 1
    if kind == ENUM:
        return z % 2 == 0 and z // 2 < argument
    if kind == VARINT:
        return n <= argument
    return z % 2 == 0 and z // 2 <= left  # SPAN: a non-negative length, then its bytes


def warm() -> None:
    """Compile `unparsed` into numba's cache (`make install` runs this), so that the first
    decoder of a process only loads it (~0.5 s), on the first group of 1,000+ records."""
    body = np.frombuffer(b"\x02\x04", dtype=np.uint8)
    one = np.zeros(1, dtype=np.int64)
    unparsed(body, one, one + 2, np.array([BRANCH, VARINT]), np.array([0, 10]))

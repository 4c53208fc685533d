"""The batch decode path: one group's bodies as ONE block of an in-memory Avro container.

Owns the container bytes (header, block count and size as varints, the sync marker), the
``polars.read_avro`` call on them (which panics on some malformed blocks), the flat-record
description (`_Item`, `_flat_items`) and the record-boundary proof (`_Proof`). `codec`
uses it through `BlockLayout` (once per reader schema) and `BlockReader` (once per
writer schema). Invariants:

- only a flat record takes this path: fields of boolean, int, long, float, double, bytes,
  string, enum or fixed, each alone or in a union with null, and with no logical type but
  the ones the caller reads raw (timestamps, date, uuid: proven on their physical values);
- a frame read from a block is trusted only when `_Proof` shows that every record
  consumed exactly its own body's bytes and that every union branch, enum index, int,
  long and boolean equals the body's bytes; otherwise `BlockReader.read` returns no
  frame, only a hint (the first record the proof rejects, or None when read_avro fails)
  of where the caller may split the bodies to read again. Nothing but a frame of a
  block proven whole is trusted: hints and `BlockReader.readable` only steer splitting.
  It never raises on bad bodies;
- Rust's report of a read_avro panic never reaches stderr: it quotes what the reader
  read from the bodies, which in a malformed body can be any field's value (a pii one as
  well). See `_read_avro`.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Final

import numpy as np
import polars as pl
import pyarrow as pa
from polars.exceptions import PanicException

_SYNC: Final = b"featurestore.blk"  # any 16 bytes: the container's sync marker
_PROBE: Final = 256  # bodies per read_avro probe in `BlockReader.breakers`
_STDERR_LOCK: Final = threading.Lock()  # one read at a time points fd 2 elsewhere


class BlockLayout:
    """How a flat record schema's records lie in a block, and the proof over them.

    Built once per reader schema, from its (fastavro-parsed) `fields` and named types,
    with `columns` the frame columns decoding yields; `read_raw` names the logical types
    the fields may still carry (their values are proven on their physical type)."""

    def __init__(self, columns: pl.Schema, proof: _Proof, walk: np.ndarray) -> None:
        self._columns, self._proof, self._walk = columns, proof, walk

    @classmethod
    def of(
        cls,
        fields: list[dict[str, Any]],
        named: dict[str, Any],
        columns: pl.Schema,
        *,
        read_raw: Collection[str] = (),
    ) -> BlockLayout | None:
        """The layout, or None when the schema is not a flat record (see the invariants)."""
        from featurestore.contracts import skim  # numba: imported by the first decoder

        items = _flat_items(fields, named, read_raw)
        if items is None:
            return None
        walk = [(skim.CODES[kind], argument) for kind, argument in (i.skim for i in items)]
        return cls(columns, _Proof(items), np.array(walk, dtype=np.int64))

    def reader(self, writer_schema: str) -> BlockReader | None:
        """The reader of blocks of `writer_schema` (JSON text, identical to the reader
        schema), or None when read_avro cannot read it (named type references): probed
        once, on an empty container."""
        header = _container_header(writer_schema)
        try:
            readable = _read_avro(header).columns == self._columns.names()
        except (Exception, PanicException):
            readable = False
        return BlockReader(header, self._columns, self._proof, self._walk) if readable else None


class BlockReader:
    """Reads the bodies of one writer schema as one block, built by `BlockLayout.reader`."""

    def __init__(self, header: bytes, columns: pl.Schema, proof: _Proof, walk: np.ndarray) -> None:
        self._header, self._columns, self._proof = header, columns, proof
        self._kinds, self._arguments = walk[:, 0].copy(), walk[:, 1].copy()  # skim's arrays

    def unparsed(self, bodies: Sequence[bytes]) -> list[int]:
        """The indexes of the bodies that do not walk as one record of the schema
        (`skim.unparsed`: a hint, never a reason to trust a body)."""
        from featurestore.contracts import skim

        lengths = np.fromiter(map(len, bodies), dtype=np.int64, count=len(bodies))
        data = np.frombuffer(b"".join(bodies), dtype=np.uint8)
        found = skim.unparsed(data, np.cumsum(lengths) - lengths, lengths, self._kinds,
                              self._arguments)  # fmt: skip
        return list(found.tolist())

    def read(self, bodies: Sequence[bytes]) -> pl.DataFrame | int | None:
        """One row per body, in order, in the layout's columns, when the proof holds for
        the whole block. Otherwise no frame: the index of the first record the proof
        rejects when read_avro read the block, or None when it failed. The index is only
        a hint (a record before it may have consumed bytes of the next body and still
        fit its own length): the caller must not trust the records before it."""
        data = b"".join(bodies)
        lengths = pl.Series([len(b) for b in bodies], dtype=pl.Int64)
        try:
            frame = _read_avro(self._block(bodies, data))
            if frame.columns != self._columns.names() or frame.height != len(bodies):
                return None
            first_bad = self._proof(frame, lengths, data)
            return frame.cast(self._columns) if first_bad is None else first_bad
        except (Exception, PanicException):  # read_avro panics on some malformed blocks
            return None

    def readable(self, bodies: Sequence[bytes]) -> bool:
        """Whether read_avro reads `bodies` as a block without failing (no proof: a hint
        for finding bodies that break a block, never a reason to trust one)."""
        try:
            return _read_avro(self._block(bodies, b"".join(bodies))).height == len(bodies)
        except (Exception, PanicException):
            return False

    def breakers(self, bodies: Sequence[bytes], leaf: int = 1) -> list[int]:
        """The indexes of the bodies in the runs of at most `leaf` bodies that read_avro
        fails on, found by probing chunks of `_PROBE` bodies and halving the ones that
        fail (`readable`: no proof, so a hint only)."""
        found: list[int] = []
        todo = [range(i, min(i + _PROBE, len(bodies))) for i in range(0, len(bodies), _PROBE)]
        while todo:
            part = todo.pop()
            if self.readable([bodies[i] for i in part]):
                continue
            if len(part) <= leaf:
                found += part
            else:
                todo += [part[len(part) // 2 :], part[: len(part) // 2]]
        return found

    def _block(self, bodies: Sequence[bytes], data: bytes) -> bytes:
        return b"".join((self._header, _varint(len(bodies)), _varint(len(data)), data, _SYNC))


def _read_avro(container: bytes) -> pl.DataFrame:
    """``pl.read_avro`` of one in-memory container, keeping Rust's panic reports off stderr.

    read_avro panics on some malformed blocks, and Rust's panic hook writes a report to
    fd 2 before Polars raises PanicException. The report quotes what the reader read
    ("range end index 918273645501 out of range for slice of length 8": a length read
    from a body, which in a body that lacks a field is the next field's value). So fd 2
    points at a temporary file during the call; what was written there is dropped when
    the call failed or a report is in it (with whatever another thread wrote in those
    milliseconds), and copied to fd 2 otherwise. Reads take turns (a lock), since fd 2
    is the process's. The file costs ~40 us a call; a batch makes one call or a few."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as captured:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr to keep clean
            return pl.read_avro(BytesIO(container))
        os.dup2(captured.fileno(), 2)
        failed = True
        try:
            frame = pl.read_avro(BytesIO(container))
            failed = False
            return frame
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            written = captured.read()
            if written and not failed and b" panicked at " not in written:
                _write_all(2, written)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@dataclass(frozen=True)
class _Item:
    """A piece of a flat record's encoding, for `_Proof`: a varint of at most `longest`
    bytes (`value`: its zigzag-mapped UInt64 value, whose bytes are compared) or, with
    `longest` 0, a span (`value`: its size in bytes, only counted)."""

    value: pl.Expr
    longest: int = 0
    present: pl.Expr | None = None  # when the value is there at all (a nullable field's)
    skim: tuple[str, int] = ("fixed", 0)  # its kind and argument for `skim.unparsed`


def _container_header(schema_json: str) -> bytes:
    """The header of an uncompressed Avro object container file of `schema_json`."""
    meta = [b"avro.schema", schema_json.encode(), b"avro.codec", b"null"]
    return b"".join([b"Obj\x01", _varint(2), *(_varint(len(m)) + m for m in meta), b"\0", _SYNC])


def _varint(n: int) -> bytes:
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    return bytes([*out, z])


def _flat_items(
    fields: list[dict[str, Any]], named: dict[str, Any], read_raw: Collection[str]
) -> list[_Item] | None:
    """Each record's encoding as items, for the batch path's proof; None when the batch
    path does not take the schema (nested types, multi-type unions, time, decimal)."""
    items: list[_Item] = []
    for f in fields:
        col, t, present = pl.col(f["name"]), f["type"], None
        if isinstance(t, list):
            if len(t) != 2 or "null" not in t:
                return None
            null_at, present = t.index("null"), col.is_not_null()
            branch = pl.when(present).then(2 - 2 * null_at).otherwise(2 * null_at)  # zigzag
            items.append(_Item(branch.cast(pl.UInt64), 1, skim=("branch", null_at)))
            t = t[1 - null_at]
        t = named.get(t, t) if isinstance(t, str) else t
        kind, logical = (t, None) if isinstance(t, str) else (t["type"], t.get("logicalType"))
        if logical not in (None, *read_raw) or kind in ("record", "array", "map", "null"):
            return None
        if kind == "boolean":  # its byte is 0 or 1: the varint of zigzag value 0 or 1
            items.append(_Item(col.cast(pl.UInt64), 1, present, ("boolean", 0)))
        elif kind == "enum":  # the index, zigzag-mapped
            index = {symbol: 2 * i for i, symbol in enumerate(t["symbols"])}
            zigzag = col.cast(pl.String).replace_strict(index, default=None, return_dtype=pl.UInt64)
            items.append(_Item(zigzag, len(_varint(len(index) - 1)), present,
                               ("enum", len(index))))  # fmt: skip
        elif kind in ("int", "long"):
            zigzag = _zigzag(col.to_physical().cast(pl.Int64))
            longest = 5 if kind == "int" else 10
            items.append(_Item(zigzag, longest, present, ("varint", longest)))
        elif kind in ("string", "bytes"):
            n = (col.str.len_bytes() if kind == "string" else col.bin.size()).cast(pl.UInt64)
            span = (_varint_len(n * 2) + n).cast(pl.Int64)
            items.append(_Item(span, 0, present, ("span", 0)))
        else:
            size = {"float": 4, "double": 8}.get(kind) or int(t["size"])
            items.append(_Item(pl.lit(size, pl.Int64), 0, present, ("fixed", size)))
    return items


class _Proof:
    """Whether a frame is exactly what the bodies (``data``, ``lengths`` bytes each) encode.

    Each record's canonical encoding must be as long as its body, and every varint (union
    branch, enum index, int, long, boolean) must equal the body's bytes at the offset the
    items before it give. A decoder consumes at least the canonical size of what it
    returns, so equal sizes mean every record (and item) consumed exactly its own bytes;
    equal varint bytes mean the decoder did not wrap, clamp or re-map a value (read_avro
    wraps ints, reads a boolean byte 5 as false and any union index > 0 as the second
    branch). String and float contents are copied from these proven offsets. The
    expressions are built once per reader schema: a batch costs two Polars queries."""

    def __init__(self, items: list[_Item]) -> None:
        varints = [k for k, item in enumerate(items) if item.longest]
        sizes, names = [], [f"s{k}" for k in range(len(items))]
        for k, item in enumerate(items):
            size = _varint_len(pl.col(f"v{k}")) if item.longest else item.value
            if item.present is not None:  # a nullable field's value: no bytes when null
                size = pl.when(item.present).then(size).otherwise(0)
            sizes.append(size.alias(f"s{k}"))
        start = pl.col("_len").cum_sum() - pl.col("_len")
        self.stages = (
            [items[k].value.alias(f"v{k}") for k in varints],
            sizes,
            [(start + pl.sum_horizontal([*names[:k], pl.lit(0)])).alias(f"o{k}") for k in varints],
        )
        wheres: list[pl.Expr] = []
        wants: list[pl.Expr] = []
        for k in varints:
            size, z = pl.col(f"s{k}"), pl.col(f"v{k}")
            for m in range(items[k].longest):  # byte m of varint k: where it is, what it is
                wheres.append(pl.when(size > m).then(pl.col(f"o{k}") + m))
                wants.append(z // (128**m) % 128 + (size > m + 1).cast(pl.UInt64) * 128)
        fits = pl.all_horizontal(pl.col(names).is_not_null()) & (
            pl.sum_horizontal(names) == pl.col("_len")
        )
        wheres, wants = wheres or [pl.lit(None, pl.Int64)], wants or [pl.lit(0, pl.UInt64)]
        self.check = [
            pl.int_range(pl.len()).filter(~fits).first().alias("unfit"),
            pl.concat(wheres).alias("at"),
            pl.concat(wants).alias("want"),
        ]

    def __call__(self, frame: pl.DataFrame, lengths: pl.Series, data: bytes) -> int | None:
        """None when the proof holds for every record; otherwise the index of the first
        record that fails its own part of it (a hint for splitting, see `BlockReader`)."""
        values, sizes, offsets = self.stages
        work = frame.with_columns(values).with_columns(sizes, _len=lengths).with_columns(offsets)
        check = work.select(self.check)
        unfit = check["unfit"].drop_nulls()
        first = int(unfit[0]) if len(unfit) else None
        # the bytes of the records before the first unfit one (theirs lie in their bodies)
        end = len(data) if first is None else int(lengths.head(first).sum())
        check = check.drop_nulls("at").filter(pl.col("at") < end)
        body = pl.from_arrow(
            pa.Array.from_buffers(pa.uint8(), len(data), [None, pa.py_buffer(data)])
        )
        assert isinstance(body, pl.Series)
        good = (body.gather(check["at"]).cast(pl.UInt64) == check["want"]).fill_null(False)
        if not good.all():  # the record whose bytes hold the first wrong byte
            at = check["at"].filter(~good).min()
            assert isinstance(at, int)
            row = int(lengths.cum_sum().search_sorted(at, side="right"))
            first = row if first is None else min(first, row)
        return first


def _zigzag(x: pl.Expr) -> pl.Expr:
    """Avro's zigzag mapping of Int64 values, as UInt64."""
    return pl.when(x >= 0).then(x).otherwise(-(x + 1)).cast(pl.UInt64) * 2 + (x < 0).cast(pl.UInt64)


def _varint_len(z: pl.Expr) -> pl.Expr:
    """Bytes in the varint of UInt64 `z`: one per started 7 bits, at least one."""
    return (70 - (z | 1).bitwise_leading_zeros().cast(pl.Int64)) // 7

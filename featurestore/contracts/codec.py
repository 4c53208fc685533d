"""Decoding: Confluent-framed Avro values into one Polars frame per micro-batch.

Owns the wire framing (schema id in the value prefix, or schema GUID in the
``__value_schema_id`` header of newer confluent-kafka clients), the writer-schema cache,
resolution to the contract's reader schema, the Avro -> Polars type mapping
(`polars_schema`) and the isolation of bad records. Invariants:

- every input index ends in exactly one place: a row of `DecodedBatch.frame` (its ``_row``)
  or one `Rejection` (DECODE_ERROR, UNKNOWN_SCHEMA or INCOMPATIBLE_SCHEMA);
- only ``KeyError``/`UnknownSchemaError` from ``fetch_writer`` mean "unknown schema"; all
  else it raises (a registry outage) propagates, so the consumer retries and never
  dead-letters on an outage. Writers are fetched once and cached; unknown ids are asked
  again next batch (the schema may have been registered since);
- a record decodes from exactly its body: short, trailing or junk bytes are DECODE_ERROR;
- resolution is fastavro's, per record: we write no resolution rules. timestamp-*,
  local-timestamp-*, date and uuid are read as their underlying types and typed by the
  reader schema (as the Avro spec and the Java library do); decimal and time-* values are
  converted by fastavro, from the writer's logical type;
- the batch path (a group's bodies as ONE block of an in-memory Avro container, read by
  ``polars.read_avro``) runs only for a writer identical to the reader and a flat record,
  and is trusted only once `_Proof` proves that each record consumed exactly its body
  and each varint and boolean holds the decoded value; otherwise the group is decoded
  record by record. Both paths give the same rows and rejections for any input;
- rejection messages never quote decoded values (fields may be PII); enum symbols, which
  the schemas define, may appear.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Final, Literal, TypeAlias

import fastavro
import polars as pl
import pyarrow as pa
from fastavro.read import SchemaResolutionError
from fastavro.schema import to_parsing_canonical_form
from polars.exceptions import PanicException

from featurestore.contracts.violations import Reason, Rejection
from featurestore.errors import ContractError, FeatureStoreError, UnknownSchemaError

SchemaRef: TypeAlias = int | str  # a registry schema id, or a schema GUID as canonical text
Headers: TypeAlias = Sequence[tuple[str, bytes | None]] | None
VALUE_SCHEMA_ID_HEADER: Final = "__value_schema_id"
ROW: Final = "_row"

_MAGIC_ID, _MAGIC_GUID = 0, 1  # confluent_kafka's _MAGIC_BYTE_V0 (+ 4-byte id), _V1 (+ GUID)
_PRIMITIVES: Final[Mapping[str, pl.DataType]] = {
    "null": pl.Null(), "boolean": pl.Boolean(), "int": pl.Int32(), "long": pl.Int64(),
    "float": pl.Float32(), "double": pl.Float64(), "bytes": pl.Binary(), "string": pl.String(),
}  # fmt: skip
_TIMESTAMPS: Final[Mapping[str, tuple[Literal["ms", "us", "ns"], str | None]]] = {
    "timestamp-millis": ("ms", "UTC"), "timestamp-micros": ("us", "UTC"),
    "timestamp-nanos": ("ns", "UTC"), "local-timestamp-millis": ("ms", None),
    "local-timestamp-micros": ("us", None), "local-timestamp-nanos": ("ns", None),
}  # fmt: skip
_LOGICAL: Final[Mapping[tuple[str, str], pl.DataType]] = {
    **{("long", name): pl.Datetime(*unit_tz) for name, unit_tz in _TIMESTAMPS.items()},
    ("int", "date"): pl.Date(), ("int", "time-millis"): pl.Time(),
    ("long", "time-micros"): pl.Time(),
}  # fmt: skip
_READ_RAW: Final = frozenset({*_TIMESTAMPS, "date", "uuid"})
_SYNC: Final = b"featurestore.blk"  # any 16 bytes: the container's sync marker
_OBJECT_REPR: Final = re.compile(r"( from)? <[^<>]* at 0x[0-9a-f]+>")


class FrameError(FeatureStoreError, ValueError):
    """A Kafka value is not a Confluent-framed Avro record (it becomes a DECODE_ERROR)."""


def parse_frame(value: bytes | None, headers: Headers = None) -> tuple[SchemaRef, bytes]:
    """The writer schema reference and the Avro body of one Kafka value.

    With a ``__value_schema_id`` header (magic 1 + 16-byte GUID, or magic 0 + 4-byte id)
    the value is the bare body; otherwise it starts with magic 0 and a 4-byte big-endian
    id. As the stock deserializer does, the first header with that key counts, and one
    whose value is null is ignored.
    """
    header = next((v for k, v in headers if k == VALUE_SCHEMA_ID_HEADER), None) if headers else None
    if value is None or len(value) == 0:
        what = "null (a tombstone?)" if value is None else "empty"
        raise FrameError(f"the value is {what}: there is no Avro record to decode")
    if header is not None:
        if len(header) == 17 and header[0] == _MAGIC_GUID:
            return str(uuid.UUID(bytes=bytes(header[1:]))), value
        if len(header) == 5 and header[0] == _MAGIC_ID:
            return int.from_bytes(header[1:], "big"), value
        raise FrameError(
            f"the {VALUE_SCHEMA_ID_HEADER} header ({len(header)} bytes) is neither magic byte "
            "1 + a 16-byte GUID nor magic byte 0 + a 4-byte schema id"
        )
    if value[0] != _MAGIC_ID:
        raise FrameError(
            f"the value starts with byte {value[0]}, not the Confluent magic byte 0, and has no "
            f"{VALUE_SCHEMA_ID_HEADER} header: no schema-registry serializer wrote it"
        )
    if len(value) < 5:
        raise FrameError(f"the value has {len(value)} bytes: too short for the 5-byte prefix")
    return int.from_bytes(value[1:5], "big"), value[5:]


def polars_schema(reader_schema: str | Mapping[str, Any]) -> pl.Schema:
    """The frame columns (top-level fields, in order) that decoding a contract yields."""
    parsed, named = _parse(reader_schema, strip=False)
    return pl.Schema({f["name"]: _dtype(f["type"], named, raw=False) for f in _fields(parsed)})


@dataclass(frozen=True)
class DecodedBatch:
    """One row per decoded record (reader-schema columns + Int64 ``_row``, the record's
    index in the input, ascending) and one rejection per other record, by row."""

    frame: pl.DataFrame
    rejections: list[Rejection]
    fast_rows: int = 0  # records decoded by the proven batch path (for metrics)


@dataclass(frozen=True)
class _Writer:
    ref: SchemaRef
    schema: Any = None  # fastavro-parsed, stripped; None when records cannot be read with it
    reader: Any = None  # the stripped reader; None when identical to the writer
    block_header: bytes | None = None  # set when the batch path may read this writer
    refusal: tuple[Reason, str] = (Reason.INCOMPATIBLE_SCHEMA, "")


@dataclass(frozen=True)
class _Item:
    """A piece of a flat record's encoding, for `_Proof`: a varint of at most `longest`
    bytes (`value`: its zigzag-mapped UInt64 value, whose bytes are compared) or, with
    `longest` 0, a span (`value`: its size in bytes, only counted)."""

    value: pl.Expr
    longest: int = 0
    present: pl.Expr | None = None  # when the value is there at all (a nullable field's)


class BatchDecoder:
    """Decodes micro-batches of one topic into frames of one contract's reader schema."""

    def __init__(
        self,
        reader_schema: str,
        fetch_writer: Callable[[SchemaRef], str],
        *,
        fast_path_min_records: int = 1000,
    ) -> None:
        self._columns = polars_schema(reader_schema)
        self.frame_schema = pl.Schema({**self._columns, ROW: pl.Int64()})
        self._fetch, self._fast_min = fetch_writer, fast_path_min_records
        self._reader, named = _parse(reader_schema, strip=True)
        self._shape = to_parsing_canonical_form(json.loads(reader_schema))
        fields = _fields(self._reader)
        self._raw = pl.Schema({f["name"]: _dtype(f["type"], named, raw=True) for f in fields})
        self._casts = pl.Schema({n: t for n, t in self._columns.items() if self._raw[n] != t})
        items = _flat_items(fields, named)
        self._proof = None if items is None else _Proof(items)
        self._writers: dict[SchemaRef, _Writer] = {}

    def decode(
        self, values: Sequence[bytes | None], headers: Sequence[Headers] = ()
    ) -> DecodedBatch:
        """Decode one batch; `headers`, when given, holds each value's Kafka headers."""
        rejections: list[Rejection] = []
        groups: dict[SchemaRef, tuple[list[int], list[bytes]]] = {}
        for row, value in enumerate(values):
            try:
                ref, body = parse_frame(value, headers[row] if headers else None)
            except FrameError as exc:
                rejections.append(Rejection(row, Reason.DECODE_ERROR, str(exc)))
                continue
            rows, bodies = groups.setdefault(ref, ([], []))
            rows.append(row)
            bodies.append(body)
        frames, fast_rows = [], 0
        for ref, (rows, bodies) in groups.items():
            writer = self._writer(ref)
            if writer.schema is None:
                rejections += [Rejection(row, *writer.refusal) for row in rows]
                continue
            frame = None
            if writer.block_header is not None and len(rows) >= self._fast_min:
                frame = self._decode_block(writer.block_header, rows, bodies)
                fast_rows += 0 if frame is None else len(rows)
            frames.append(
                self._decode_each(writer, rows, bodies, rejections) if frame is None else frame
            )
        frame = pl.concat(frames) if frames else self._build([], [])
        rejections.sort(key=lambda r: r.row)
        return DecodedBatch(frame.sort(ROW) if len(frames) > 1 else frame, rejections, fast_rows)

    def _writer(self, ref: SchemaRef) -> _Writer:
        """The prepared writer for `ref`: fetched, parsed and compared once, then cached."""
        if (cached := self._writers.get(ref)) is not None:
            return cached
        try:
            text = self._fetch(ref)
        except (KeyError, UnknownSchemaError) as exc:
            problem = f"the registry has no schema {ref} ({_brief(exc)})"
            return _Writer(ref, refusal=(Reason.UNKNOWN_SCHEMA, problem))
        try:
            schema, _ = _parse(text, strip=True)
        except Exception as exc:
            problem = f"writer schema {ref} does not parse: {_brief(exc)}"
            writer = _Writer(ref, refusal=(Reason.INCOMPATIBLE_SCHEMA, problem))
        else:
            same = to_parsing_canonical_form(json.loads(text)) == self._shape
            same = same and _same_columns(text, self._columns)  # and the same logical types
            header = _container_header(text) if same and self._proof is not None else None
            if header is not None and not self._readable(header):
                header = None  # read_avro cannot read this schema (named type references)
            writer = _Writer(ref, schema, None if same else self._reader, header)
        self._writers[ref] = writer
        return writer

    def _readable(self, header: bytes) -> bool:
        """Whether read_avro reads the schema in `header`: probed once, on an empty file."""
        try:
            return pl.read_avro(BytesIO(header)).columns == self._columns.names()
        except (Exception, PanicException):
            return False

    def _decode_each(
        self, writer: _Writer, rows: list[int], bodies: list[bytes], out: list[Rejection]
    ) -> pl.DataFrame:
        """The isolating path: fastavro per record, each checked to end where its body does."""
        records: list[Any] = []
        kept: list[int] = []
        for row, body in zip(rows, bodies, strict=True):
            buf = BytesIO(body)
            try:
                records.append(fastavro.schemaless_reader(buf, writer.schema, writer.reader))
            except Exception as exc:
                out.append(_unreadable(row, len(body), writer.ref, exc))
                continue
            if buf.tell() == len(body):
                kept.append(row)
                continue
            records.pop()
            extra = f"{len(body) - buf.tell()} bytes follow a complete record"
            out.append(
                Rejection(row, Reason.DECODE_ERROR, f"{extra} of writer schema {writer.ref}")
            )
        try:
            return self._build(records, kept)
        except Exception:  # a value does not fit its column type: find the records, one by one
            fit = [i for i, row in enumerate(kept) if self._fits(records[i], row, out)]
            return self._build([records[i] for i in fit], [kept[i] for i in fit])

    def _fits(self, record: dict[str, Any], row: int, out: list[Rejection]) -> bool:
        try:
            return self._build([record], [row]).height == 1
        except Exception:
            name = next((n for n, t in self._raw.items() if not _holds(t, record.get(n))), None)
            problem = "the record does not fit the contract's column types"
            if name is not None:
                problem = f"field {name!r} holds a value outside its type {self._columns[name]}"
            out.append(Rejection(row, Reason.DECODE_ERROR, problem, field=name))
            return False

    def _build(self, records: list[Any], rows: list[int]) -> pl.DataFrame:
        frame = pl.DataFrame(records, schema=self._raw).cast(self._casts)
        return frame.with_columns(pl.Series(ROW, rows, dtype=pl.Int64))

    def _decode_block(
        self, header: bytes, rows: list[int], bodies: list[bytes]
    ) -> pl.DataFrame | None:
        """The batch path, or None when it fails or cannot prove the record boundaries."""
        data = b"".join(bodies)
        block = b"".join((header, _varint(len(bodies)), _varint(len(data)), data, _SYNC))
        lengths = pl.Series([len(b) for b in bodies], dtype=pl.Int64)
        try:
            frame = pl.read_avro(BytesIO(block))
            proof = self._proof
            if frame.columns == self._columns.names() and proof and proof(frame, lengths, data):
                frame = frame.cast(self._columns)
                return frame.with_columns(pl.Series(ROW, rows, dtype=pl.Int64))
        except (Exception, PanicException):  # read_avro panics on some malformed blocks
            pass
        return None


def _parse(schema: str | Mapping[str, Any], *, strip: bool) -> tuple[Any, dict[str, Any]]:
    """fastavro's parse (full names) and its named types; `strip` drops the logical
    types read raw (`_READ_RAW`), which the reader schema's column types restore."""
    raw: Any = json.loads(schema) if isinstance(schema, str) else schema
    named: dict[str, Any] = {}
    return fastavro.parse_schema(_strip(raw) if strip else raw, named_schemas=named), named


def _strip(t: Any) -> Any:
    if isinstance(t, list):
        return [_strip(x) for x in t]
    if not isinstance(t, dict):
        return t
    raw = t.get("logicalType") in _READ_RAW
    return {k: _strip(v) for k, v in t.items() if not (raw and k == "logicalType")}


def _fields(parsed: Any) -> list[dict[str, Any]]:
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise ContractError("only an Avro record schema decodes into a frame")
    return list(parsed["fields"])


def _dtype(
    t: Any, named: dict[str, Any], *, raw: bool, seen: frozenset[str] = frozenset()
) -> pl.DataType:
    """The Polars type of Avro type `t`; with `raw`, the type fastavro's values of a
    stripped schema are first collected in (then cast to the non-raw type)."""
    if isinstance(t, str):
        return _PRIMITIVES[t] if t in _PRIMITIVES else _dtype(named[t], named, raw=raw, seen=seen)
    if isinstance(t, list):
        branches = [b for b in t if b != "null"]
        if len(branches) > 1:
            raise ContractError(f"the union {t} has several non-null types: no column holds it")
        return _dtype(branches[0] if branches else "null", named, raw=raw, seen=seen)
    kind, logical = t["type"], t.get("logicalType")
    if kind == "record":
        if t["name"] in seen:
            raise ContractError(f"record {t['name']} contains itself: no column holds it")
        inner = seen | {t["name"]}
        return pl.Struct(
            {f["name"]: _dtype(f["type"], named, raw=raw, seen=inner) for f in t["fields"]}
        )
    if kind in ("array", "map"):
        item = _dtype(t.get("items", t.get("values")), named, raw=raw, seen=seen)
        if kind == "array" or raw:
            return pl.List(item) if kind == "array" else pl.Map(pl.String(), item)
        return pl.List(pl.Struct({"key": pl.String(), "value": item}))
    if logical == "decimal" and kind in ("bytes", "fixed"):
        return pl.Decimal(int(t["precision"]), int(t.get("scale", 0)))
    if kind in ("enum", "fixed"):
        return pl.String() if kind == "enum" else pl.Binary()
    if raw and logical in _READ_RAW:
        return _PRIMITIVES[kind]
    return _LOGICAL.get((kind, logical)) or _PRIMITIVES[kind]


def _same_columns(schema: str, columns: pl.Schema) -> bool:
    try:
        return polars_schema(schema) == columns
    except ContractError:
        return False


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


def _brief(exc: BaseException) -> str:
    """The exception's class and message, without object reprs (``<... at 0x7f...>``)."""
    return f"{type(exc).__name__}: {_OBJECT_REPR.sub('', str(exc))[:160]}"


def _unreadable(row: int, size: int, ref: SchemaRef, exc: Exception) -> Rejection:
    """Why fastavro could not read a record: its writer does not resolve, or its bytes."""
    if isinstance(exc, SchemaResolutionError):
        problem = f"writer schema {ref} does not resolve to the contract: {_brief(exc)}"
        return Rejection(row, Reason.INCOMPATIBLE_SCHEMA, problem)
    problem = f"the {size}-byte body does not decode with writer schema {ref}: {_brief(exc)}"
    return Rejection(row, Reason.DECODE_ERROR, problem)


def _holds(dtype: pl.DataType, value: Any) -> bool:
    try:
        return pl.Series([value], dtype=dtype, strict=True).len() == 1
    except Exception:
        return False


def _flat_items(fields: list[dict[str, Any]], named: dict[str, Any]) -> list[_Item] | None:
    """Each record's encoding as items, for the batch path's proof; None when the batch
    path does not take the schema (nested types, multi-type unions, time, decimal, uuid)."""
    items: list[_Item] = []
    for f in fields:
        col, t, present = pl.col(f["name"]), f["type"], None
        if isinstance(t, list):
            if len(t) != 2 or "null" not in t:
                return None
            null_at, present = t.index("null"), col.is_not_null()
            branch = pl.when(present).then(2 - 2 * null_at).otherwise(2 * null_at)  # zigzag
            items.append(_Item(branch.cast(pl.UInt64), 1))
            t = t[1 - null_at]
        t = named.get(t, t) if isinstance(t, str) else t
        kind, logical = (t, None) if isinstance(t, str) else (t["type"], t.get("logicalType"))
        if logical not in (None, *_READ_RAW) or kind in ("record", "array", "map", "null"):
            return None
        if kind == "boolean":  # its byte is 0 or 1: the varint of zigzag value 0 or 1
            items.append(_Item(col.cast(pl.UInt64), 1, present))
        elif kind == "enum":  # the index, zigzag-mapped
            index = {symbol: 2 * i for i, symbol in enumerate(t["symbols"])}
            zigzag = col.cast(pl.String).replace_strict(index, default=None, return_dtype=pl.UInt64)
            items.append(_Item(zigzag, len(_varint(len(index) - 1)), present))
        elif kind in ("int", "long"):
            zigzag = _zigzag(col.to_physical().cast(pl.Int64))
            items.append(_Item(zigzag, 5 if kind == "int" else 10, present))
        elif kind in ("string", "bytes"):
            n = (col.str.len_bytes() if kind == "string" else col.bin.size()).cast(pl.UInt64)
            items.append(_Item((_varint_len(n * 2) + n).cast(pl.Int64), 0, present))
        else:
            size = {"float": 4, "double": 8}.get(kind) or int(t["size"])
            items.append(_Item(pl.lit(size, pl.Int64), 0, present))
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
            fits.all().alias("fits"),
            pl.concat(wheres).alias("at"),
            pl.concat(wants).alias("want"),
        ]

    def __call__(self, frame: pl.DataFrame, lengths: pl.Series, data: bytes) -> bool:
        values, sizes, offsets = self.stages
        work = frame.with_columns(values).with_columns(sizes, _len=lengths).with_columns(offsets)
        check = work.select(self.check)
        if not check["fits"][0]:
            return False
        check = check.drop_nulls("at")
        body = pl.from_arrow(
            pa.Array.from_buffers(pa.uint8(), len(data), [None, pa.py_buffer(data)])
        )
        assert isinstance(body, pl.Series)
        return bool(
            (body.gather(check["at"]).cast(pl.UInt64) == check["want"]).fill_null(False).all()
        )


def _zigzag(x: pl.Expr) -> pl.Expr:
    """Avro's zigzag mapping of Int64 values, as UInt64."""
    return pl.when(x >= 0).then(x).otherwise(-(x + 1)).cast(pl.UInt64) * 2 + (x < 0).cast(pl.UInt64)


def _varint_len(z: pl.Expr) -> pl.Expr:
    """Bytes in the varint of UInt64 `z`: one per started 7 bits, at least one."""
    return (70 - (z | 1).bitwise_leading_zeros().cast(pl.Int64)) // 7

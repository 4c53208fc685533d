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
- the batch path (`avro_block`: a group's bodies as ONE block of an in-memory Avro
  container, read by ``polars.read_avro``) runs only for a writer identical to the reader
  and a flat record, and is trusted only once its proof shows that each record consumed
  exactly its body and each varint and boolean holds the decoded value, for the whole
  block; a block that fails is split and its parts read again (`_read_blocks`), and the
  bodies no proven block holds are decoded record by record. Both paths give the same
  rows and rejections for any input;
- rejection messages never quote decoded values (fields may be PII), nor what fastavro
  says about bytes it could not read (it quotes lengths read from them, which a
  malformed body makes another field's value); enum symbols, which the schemas define,
  may appear, but not the one a record of a pii enum field holds.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from operator import itemgetter
from typing import Any, Final, Literal, TypeAlias

import fastavro
import polars as pl
from fastavro.read import SchemaResolutionError
from fastavro.schema import to_parsing_canonical_form

from featurestore.contracts.avro_block import BlockLayout, BlockReader
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
_MIN_CHUNK: Final = 64  # bodies: a shorter run after a failed block goes per record
_OBJECT_REPR: Final = re.compile(r"( from)? <[^<>]* at 0x[0-9a-f]+>")
_ENUM_SYMBOL: Final = re.compile(r"(?<=: )(\S+) not found in reader symbol list ([^\s,]+)")
_BODY_PROBLEMS: Final[Mapping[type[Exception], str]] = {
    EOFError: "the body ends before its record does (cut short, or a length in it runs past "
    "its end)",
    UnicodeDecodeError: "a string in the body is not UTF-8",
}


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


def _framed_alike(
    values: Sequence[bytes | None], headers: Sequence[Headers]
) -> tuple[int, list[bytes]] | None:
    """The schema id and the bodies when every value is framed alike, with no schema
    header: magic 0 and the same 4-byte id (what `parse_frame` finds in each, then; the
    body is what follows). None otherwise: each value goes through `parse_frame`. One
    set of prefixes costs a tenth of a call per value."""
    if not values or any(headers):
        return None
    framed = [value for value in values if value is not None]
    if len(framed) != len(values):
        return None
    prefixes = set(map(_PREFIX, framed))
    if len(prefixes) != 1:
        return None
    prefix = prefixes.pop()
    if len(prefix) != 5 or prefix[0] != _MAGIC_ID:
        return None
    return int.from_bytes(prefix[1:], "big"), [value[5:] for value in framed]


_PREFIX = itemgetter(slice(5))


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
    block: BlockReader | None = None  # set when the batch path may read this writer
    refusal: tuple[Reason, str] = (Reason.INCOMPATIBLE_SCHEMA, "")


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
        self._pii_enums = _pii_enums(json.loads(reader_schema))
        self._shape = to_parsing_canonical_form(json.loads(reader_schema))
        fields = _fields(self._reader)
        self._raw = pl.Schema({f["name"]: _dtype(f["type"], named, raw=True) for f in fields})
        self._casts = pl.Schema({n: t for n, t in self._columns.items() if self._raw[n] != t})
        self._layout = BlockLayout.of(fields, named, self._columns, read_raw=_READ_RAW)
        self._writers: dict[SchemaRef, _Writer] = {}

    def decode(
        self, values: Sequence[bytes | None], headers: Sequence[Headers] = ()
    ) -> DecodedBatch:
        """Decode one batch; `headers`, when given, holds each value's Kafka headers."""
        rejections: list[Rejection] = []
        groups: dict[SchemaRef, tuple[list[int], list[bytes]]] = {}
        if (alike := _framed_alike(values, headers)) is not None:
            groups[alike[0]] = list(range(len(values))), alike[1]
        for row, value in enumerate(values if alike is None else ()):
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
            block = writer.block if len(rows) >= self._fast_min else None
            proven, rest = self._read_blocks(block, bodies)
            for frame, picked in proven:
                frames.append(_numbered(frame, [rows[i] for i in picked]))
                fast_rows += len(picked)
            if rest:
                rest.sort()
                each = [rows[i] for i in rest], [bodies[i] for i in rest]
                frames.append(self._decode_each(writer, *each, rejections))
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
            block = None  # None also when read_avro cannot read it (named type references)
            if same and self._layout is not None:
                block = self._layout.reader(text)
            writer = _Writer(ref, schema, None if same else self._reader, block)
        self._writers[ref] = writer
        return writer

    def _read_blocks(
        self, block: BlockReader | None, bodies: list[bytes]
    ) -> tuple[list[tuple[pl.DataFrame, list[int]]], list[int]]:
        """The batch path over one group: the proven frames, each with the indexes (in
        `bodies`) of its records, and the indexes left to the per-record path.

        Bodies that do not even walk as one record of the schema (`BlockReader.unparsed`)
        go to the per-record path at once. Only a frame `BlockReader.read` proved for its
        whole block is kept; everything else steers which bodies the next block holds. A
        block the proof rejects at record k is read again without it: the records before
        k, then the ones after in blocks of at least twice as many, doubling while they
        prove. A block read_avro fails on is read again without the runs of up to `leaf`
        bodies it fails on alone (`BlockReader.breakers`), or halved when there are none.
        Runs shorter than `_MIN_CHUNK` (or fast_path_min_records) go to the per-record
        path. Every step leaves bodies to the per-record path or reads fewer bodies: it
        ends."""
        if block is None:
            return [], list(range(len(bodies)))
        floor, size = min(self._fast_min, _MIN_CHUNK), len(bodies)
        leaf = max(1, floor // 4)  # a run that short, read_avro failing on it, goes per record
        proven: list[tuple[pl.DataFrame, list[int]]] = []
        unparsed = set(block.unparsed(bodies))
        rest = sorted(unparsed)
        todo = [[i for i in range(len(bodies)) if i not in unparsed]]  # a stack: last is next
        while todo:
            run = todo.pop()
            if len(run) > size:
                run, later = run[:size], run[size:]
                todo.append(later)
            if len(run) < floor:
                rest += run
                continue
            got = block.read([bodies[i] for i in run])
            if isinstance(got, pl.DataFrame):
                proven.append((got, run))
                size *= 2
            elif got is not None:  # the proof rejects run[got]: read the others again
                rest.append(run[got])
                todo += [part for part in (run[got + 1 :], run[:got]) if part]
                size = max(16 * floor, 2 * got)  # a proof costs ~300 per-record decodes
            elif breakers := {run[k] for k in block.breakers([bodies[i] for i in run], leaf)}:
                rest += breakers
                kept = [i for i in run if i not in breakers]
                todo += [kept] if kept else []
            elif len(run) == 1:
                rest += run
            else:
                todo += [run[len(run) // 2 :], run[: len(run) // 2]]
        return proven, rest

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
                ended = buf.tell() >= len(body)  # the reader ran out of bytes
                out.append(_unreadable(row, len(body), writer.ref, exc, self._pii_enums, ended))
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
        return _numbered(pl.DataFrame(records, schema=self._raw).cast(self._casts), rows)


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


def _numbered(frame: pl.DataFrame, rows: list[int]) -> pl.DataFrame:
    """`frame` with its records' input indexes as the Int64 ``_row`` column."""
    return frame.with_columns(pl.Series(ROW, rows, dtype=pl.Int64))


def _brief(exc: BaseException) -> str:
    """The exception's class and message, without object reprs (``<... at 0x7f...>``)."""
    return f"{type(exc).__name__}: {_OBJECT_REPR.sub('', str(exc))[:160]}"


def _unreadable(  # noqa: PLR0917
    row: int,
    size: int,
    ref: SchemaRef,
    exc: Exception,
    pii_enums: frozenset[str],
    ended: bool = False,
) -> Rejection:
    """Why fastavro could not read a record: its writer does not resolve, or its bytes.

    What fastavro says about bytes it cannot read is never quoted: it holds what it read
    from them. "Expected N bytes" is a length read from the body, and in a body that
    lacks a field that length is the next field's value (a pii number as well). A body
    the reader ran out of (``ended``) was cut short, whatever fastavro raised then. A
    resolution failure speaks of the schemas, and of the enum symbol the record holds
    when the reader lacks it: withheld for an enum of a pii field (`pii_enums`)."""
    if isinstance(exc, SchemaResolutionError):
        text = _brief(exc)
        symbol = _ENUM_SYMBOL.search(text)
        if symbol is not None and symbol.group(2) in pii_enums:
            text = text[: symbol.start()] + f"a symbol (pii, withheld){text[symbol.end(1) :]}"
        problem = f"writer schema {ref} does not resolve to the contract: {text}"
        return Rejection(row, Reason.INCOMPATIBLE_SCHEMA, problem)
    why = next((f": {text}" for kind, text in _BODY_PROBLEMS.items() if isinstance(exc, kind)),
               "")  # fmt: skip
    if not why and ended and isinstance(exc, IndexError):  # fastavro past the last byte
        why = f": {_BODY_PROBLEMS[EOFError]}"
    problem = f"the {size}-byte body does not decode with writer schema {ref}: "
    problem += type(exc).__name__ + why
    return Rejection(row, Reason.DECODE_ERROR, problem)


def _pii_enums(schema: Any) -> frozenset[str]:
    """Full names of the enums in the types of the record's pii fields (by definition or
    by reference), as fastavro names them."""
    found: set[str] = set()

    def walk(t: Any, namespace: str | None) -> None:
        if isinstance(t, list):
            for branch in t:
                walk(branch, namespace)
        elif isinstance(t, str):
            found.add(t if "." in t or not namespace else f"{namespace}.{t}")
        elif isinstance(t, dict):
            name, inner = t.get("name"), t.get("namespace", namespace)
            if isinstance(name, str) and "." in name:
                inner = name.rsplit(".", 1)[0]
            if t.get("type") == "enum" and isinstance(name, str):
                found.add(name if "." in name or not inner else f"{inner}.{name}")
            for f in t.get("fields", []) if t.get("type") == "record" else []:
                walk(f.get("type"), inner)
            for key in ("items", "values"):
                if key in t:
                    walk(t[key], inner)

    namespace = schema.get("namespace") if isinstance(schema, dict) else None
    for field in schema.get("fields", []) if isinstance(schema, dict) else []:
        if field.get("pii") is True:
            walk(field.get("type"), namespace)
    return frozenset(found)


def _holds(dtype: pl.DataType, value: Any) -> bool:
    try:
        return pl.Series([value], dtype=dtype, strict=True).len() == 1
    except Exception:
        return False

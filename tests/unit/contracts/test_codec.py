"""Unit tests for featurestore.contracts.codec: framing, writer lookup, resolution, types,
bad bodies, and the batch path's equivalence with the per-record path.

Payloads are built here with fastavro's schemaless_writer and the Confluent framing; the
GUID header comes from confluent-kafka's own ``SchemaId`` so our reading of it is checked
against the stock client's writing.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import polars as pl
import pytest
from confluent_kafka.schema_registry.common.serde import SchemaId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.contracts.avro_block import BlockReader
from featurestore.contracts.codec import (
    ROW,
    VALUE_SCHEMA_ID_HEADER,
    BatchDecoder,
    DecodedBatch,
    FrameError,
    SchemaRef,
    _framed_alike,
    parse_frame,
    polars_schema,
)
from featurestore.contracts.violations import Reason
from featurestore.errors import ContractError, RegistryUnavailableError, UnknownSchemaError

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
V1, V2, V3 = ((SCHEMAS / f"card_payment.v{n}.avsc").read_text() for n in (1, 2, 3))
TS = 1_790_000_000_000  # 2026-09-21, in ms
FAST, SLOW = 1, 10**9  # fast_path_min_records: always try the batch path / never


class Registry:
    """A fake `fetch_writer`: KeyError for unknown refs, and a record of every call."""

    def __init__(self, schemas: dict[SchemaRef, str]) -> None:
        self.schemas = schemas
        self.calls: list[SchemaRef] = []

    def __call__(self, ref: SchemaRef) -> str:
        self.calls.append(ref)
        return self.schemas[ref]


def encode(schema: str | dict[str, Any], record: dict[str, Any]) -> bytes:
    parsed = fastavro.parse_schema(json.loads(schema) if isinstance(schema, str) else schema)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    return buf.getvalue()


def framed(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def payment(i: int, *, v2: bool = True, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "payment_id": f"pay_{i:08d}",
        "card_id": f"card_{i % 1000:06d}",
        "amount": round(12.5 + i * 0.37, 2),
        "currency": ("EUR", "USD", "GBP")[i % 3],
        "merchant_id": f"m_{i % 97}",
        "merchant_category": "5411",
        "country": ("DE", "FR", "US")[i % 3],
        "channel": ("POS", "ONLINE", "ATM", "MOTO")[i % 4],
        "ip_address": None if i % 2 else f"10.0.0.{i % 256}",
        "ts": TS + i,
    }
    if v2:
        record["device_id"] = None if i % 3 else f"dev_{i}"
    return record | changes


def decoder(reader: str = V2, fast: int = FAST, **schemas: str) -> BatchDecoder:
    known: dict[SchemaRef, str] = {1: V1, 2: V2, 3: V3}
    registry = Registry(known | {int(k[1:]): v for k, v in schemas.items()})
    return BatchDecoder(reader, registry, fast_path_min_records=fast)


def rows(batch: DecodedBatch) -> list[dict[str, Any]]:
    """The frame's rows with timestamps as epoch ms, comparable with `payment`."""
    return batch.frame.with_columns(pl.col("ts").dt.epoch("ms")).to_dicts()


def reasons(batch: DecodedBatch) -> list[tuple[int, Reason]]:
    return [(r.row, r.reason) for r in batch.rejections]


def accounted(batch: DecodedBatch, n: int) -> None:
    decoded = batch.frame[ROW].to_list()
    rejected = [r.row for r in batch.rejections]
    assert sorted(decoded + rejected) == list(range(n))
    assert decoded == sorted(decoded)


# ----------------------------------------------------------------------------- framing


def test_prefix_framing_gives_the_id_and_the_rest_as_body() -> None:
    assert parse_frame(b"\x00\x00\x00\x01\x02abc") == (258, b"abc")
    assert parse_frame(b"\x00\xff\xff\xff\xff") == (2**32 - 1, b"")


def test_guid_header_from_the_stock_client_names_the_schema_and_the_value_is_the_body() -> None:
    guid = uuid.uuid4()
    header = SchemaId("AVRO", guid=str(guid)).guid_to_bytes()
    assert parse_frame(b"\x02xy", [("other", b"1"), (VALUE_SCHEMA_ID_HEADER, header)]) == (
        str(guid),
        b"\x02xy",
    )


def test_id_in_the_header_and_header_precedence_follow_the_stock_deserializer() -> None:
    id_header = SchemaId("AVRO", 9).id_to_bytes()
    assert parse_frame(b"\x00\x00\x00\x00\x07zz", [(VALUE_SCHEMA_ID_HEADER, id_header)]) == (
        9,
        b"\x00\x00\x00\x00\x07zz",
    )
    first, second = (SchemaId("AVRO", n).id_to_bytes() for n in (4, 5))
    headers = [(VALUE_SCHEMA_ID_HEADER, first), (VALUE_SCHEMA_ID_HEADER, second)]
    assert parse_frame(b"\x01", headers)[0] == 4
    # a header without a value is ignored: the prefix counts
    assert parse_frame(b"\x00\x00\x00\x00\x03b", [(VALUE_SCHEMA_ID_HEADER, None)]) == (3, b"b")


@pytest.mark.parametrize(
    ("value", "headers", "words"),
    [
        (None, None, "null"),
        (b"", None, "empty"),
        (b"\x01\x00\x00\x00\x07body", None, "magic byte 0"),
        (b"{json}", None, "magic byte 0"),
        (b"\x00\x00\x07", None, "too short"),
        (b"body", [(VALUE_SCHEMA_ID_HEADER, b"\x01" + bytes(15))], "16-byte GUID"),
        (b"body", [(VALUE_SCHEMA_ID_HEADER, b"\x02" + bytes(16))], "16-byte GUID"),
        (b"body", [(VALUE_SCHEMA_ID_HEADER, b"")], "16-byte GUID"),
    ],
)
def test_unframed_values_are_frame_errors_and_decode_errors(
    value: bytes | None, headers: list[tuple[str, bytes | None]] | None, words: str
) -> None:
    with pytest.raises(FrameError, match=words):
        parse_frame(value, headers)
    batch = decoder().decode([value, framed(2, encode(V2, payment(1)))], [headers, None])
    assert reasons(batch) == [(0, Reason.DECODE_ERROR)]
    assert words in batch.rejections[0].message
    assert batch.frame[ROW].to_list() == [1]


# ------------------------------------------------------------------ writers and registry


def test_guid_and_id_framed_records_decode_together() -> None:
    guid = str(uuid.uuid4())
    registry = Registry({2: V2, guid: V2})
    values = [framed(2, encode(V2, payment(0))), encode(V2, payment(1))]
    headers = [None, [(VALUE_SCHEMA_ID_HEADER, SchemaId("AVRO", guid=guid).guid_to_bytes())]]
    batch = BatchDecoder(V2, registry).decode(values, headers)
    assert rows(batch) == [payment(0) | {ROW: 0}, payment(1) | {ROW: 1}]
    assert sorted(map(str, registry.calls)) == sorted(["2", guid])


@pytest.mark.parametrize("missing", [KeyError(8), UnknownSchemaError("no schema 8")])
def test_unknown_schema_ids_are_rejected_and_asked_again_next_batch(missing: Exception) -> None:
    calls: list[SchemaRef] = []

    def fetch(ref: SchemaRef) -> str:
        calls.append(ref)
        if ref == 8:
            raise missing
        return V2

    codec = BatchDecoder(V2, fetch)
    values = [framed(8, encode(V2, payment(0))), framed(2, encode(V2, payment(1)))] * 2
    for _ in range(2):
        batch = codec.decode(values)
        assert reasons(batch) == [(0, Reason.UNKNOWN_SCHEMA), (2, Reason.UNKNOWN_SCHEMA)]
        assert "8" in batch.rejections[0].message
        assert batch.frame[ROW].to_list() == [1, 3]
    assert calls == [8, 2, 8]  # known writers are cached; unknown ones are not


@pytest.mark.parametrize(
    "outage",
    [RegistryUnavailableError("registry down"), ConnectionError("refused"), TimeoutError()],
)
def test_a_registry_outage_propagates_instead_of_rejecting(outage: Exception) -> None:
    def fetch(ref: SchemaRef) -> str:
        raise outage

    with pytest.raises(type(outage)):
        BatchDecoder(V2, fetch).decode([framed(2, encode(V2, payment(0)))])


def test_v1_and_v2_writers_decode_into_one_frame_under_the_v2_reader() -> None:
    values = [
        framed(1 if i % 2 else 2, encode(V1 if i % 2 else V2, payment(i, v2=not i % 2)))
        for i in range(200)
    ]
    for fast in (FAST, SLOW):
        batch = decoder(V2, fast).decode(values)
        assert batch.rejections == []
        assert batch.frame.schema == pl.Schema(polars_schema(V2) | {ROW: pl.Int64()})
        expected = [payment(i) | {ROW: i} for i in range(200)]
        for i in range(1, 200, 2):
            expected[i]["device_id"] = None  # v1 has none: the reader's default
        assert rows(batch) == expected
        assert batch.fast_rows == (100 if fast == FAST else 0)


def test_wallet_written_by_v2_is_rejected_per_record_under_the_v1_reader() -> None:
    values = [
        framed(2, encode(V2, payment(i, channel="WALLET" if i == 1 else "POS"))) for i in range(3)
    ]
    batch = decoder(V1).decode(values)
    assert reasons(batch) == [(1, Reason.INCOMPATIBLE_SCHEMA)]
    assert "WALLET" in batch.rejections[0].message
    assert [r["payment_id"] for r in rows(batch)] == ["pay_00000000", "pay_00000002"]
    assert "device_id" not in batch.frame.columns


def test_unresolvable_writers_reject_every_record_written_with_them() -> None:
    v3_record = payment(0) | {"amount": b"\x01\x02", "risk_score": 0.5}
    batch = decoder(V2).decode(
        [framed(3, encode(V3, v3_record)), framed(2, encode(V2, payment(1)))]
    )
    assert reasons(batch) == [(0, Reason.INCOMPATIBLE_SCHEMA)]
    batch = decoder(V3).decode([framed(2, encode(V2, payment(i))) for i in range(3)])
    assert reasons(batch) == [(i, Reason.INCOMPATIBLE_SCHEMA) for i in range(3)]
    assert batch.frame.height == 0


def test_a_writer_schema_that_does_not_parse_is_incompatible() -> None:
    codec = decoder(
        V2, s9='{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}'
    )
    batch = codec.decode([framed(9, b"\x00"), framed(9, b"\x02")])
    assert reasons(batch) == [(0, Reason.INCOMPATIBLE_SCHEMA), (1, Reason.INCOMPATIBLE_SCHEMA)]
    assert "does not parse" in batch.rejections[0].message


def test_an_empty_batch_gives_an_empty_frame_with_the_reader_columns() -> None:
    batch = decoder().decode([])
    assert batch.frame.height == 0
    assert batch.rejections == []
    assert batch.frame.schema == pl.Schema(polars_schema(V2) | {ROW: pl.Int64()})


# ------------------------------------------------------------------------------- types


def field(name: str, avro_type: Any) -> dict[str, Any]:
    return {"name": name, "type": avro_type}


def logical(base: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"type": base, "logicalType": name, **extra}


ALL_TYPES: dict[str, Any] = {
    "type": "record",
    "name": "AllTypes",
    "fields": [
        field("i", "int"),
        field("l", "long"),
        field("f", "float"),
        field("d", "double"),
        field("b", "boolean"),
        field("s", "string"),
        field("e", {"type": "enum", "name": "E", "symbols": ["A", "B"]}),
        field("by", "bytes"),
        field("fx", {"type": "fixed", "name": "F3", "size": 3}),
        field("tsm", logical("long", "timestamp-millis")),
        field("tsu", logical("long", "timestamp-micros")),
        field("ltsm", logical("long", "local-timestamp-millis")),
        field("ltsu", logical("long", "local-timestamp-micros")),
        field("day", logical("int", "date")),
        field("tm", logical("int", "time-millis")),
        field("tu", logical("long", "time-micros")),
        field("dec", logical("bytes", "decimal", precision=10, scale=2)),
        field(
            "decf",
            {
                "type": "fixed",
                "name": "D8",
                "size": 8,
                "logicalType": "decimal",
                "precision": 12,
                "scale": 3,
            },
        ),
        field("u", logical("string", "uuid")),
        field("n", ["null", "long"]),
        field("arr", {"type": "array", "items": "string"}),
        field(
            "rec",
            {
                "type": "record",
                "name": "R",
                "fields": [field("x", "int"), field("y", ["string", "null"])],
            },
        ),
        field("m", {"type": "map", "values": "long"}),
        field("again", "E"),  # a named type used twice
    ],
}
EXPECTED_TYPES = {
    "i": pl.Int32(), "l": pl.Int64(), "f": pl.Float32(), "d": pl.Float64(), "b": pl.Boolean(),
    "s": pl.String(), "e": pl.String(), "by": pl.Binary(), "fx": pl.Binary(),
    "tsm": pl.Datetime("ms", "UTC"), "tsu": pl.Datetime("us", "UTC"),
    "ltsm": pl.Datetime("ms"), "ltsu": pl.Datetime("us"), "day": pl.Date(), "tm": pl.Time(),
    "tu": pl.Time(), "dec": pl.Decimal(10, 2), "decf": pl.Decimal(12, 3), "u": pl.String(),
    "n": pl.Int64(), "arr": pl.List(pl.String()),
    "rec": pl.Struct({"x": pl.Int32(), "y": pl.String()}),
    "m": pl.List(pl.Struct({"key": pl.String(), "value": pl.Int64()})), "again": pl.String(),
}  # fmt: skip
UTC = dt.UTC
ALL_VALUES: dict[str, Any] = {
    "i": -5, "l": 2**40, "f": 1.5, "d": 2.25, "b": True, "s": "hé", "e": "B", "by": b"\x00\x01",
    "fx": b"abc", "tsm": dt.datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC),
    "tsu": dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
    "ltsm": dt.datetime(2026, 1, 2, 3, 4, 5, 123000),
    "ltsu": dt.datetime(2026, 1, 2, 3, 4, 5, 123456),
    "day": dt.date(2026, 1, 2), "tm": dt.time(3, 4, 5, 123000), "tu": dt.time(3, 4, 5, 123456),
    "dec": Decimal("123.45"), "decf": Decimal("-0.050"), "u": str(uuid.UUID(int=7)), "n": None,
    "arr": ["a", "b"], "rec": {"x": 1, "y": None}, "m": {"k": 1, "j": -2}, "again": "A",
}  # fmt: skip


def test_every_avro_type_and_logical_type_has_its_polars_type() -> None:
    assert polars_schema(json.dumps(ALL_TYPES)) == pl.Schema(EXPECTED_TYPES)
    nanos = {
        "type": "record",
        "name": "N",
        "fields": [field("t", logical("long", "timestamp-nanos"))],
    }
    assert polars_schema(nanos) == pl.Schema({"t": pl.Datetime("ns", "UTC")})


@pytest.mark.parametrize("fast", [FAST, SLOW])
def test_every_type_decodes_to_its_value(fast: int) -> None:
    schema = json.dumps(ALL_TYPES)
    batch = decoder(schema, fast, s5=schema).decode([framed(5, encode(schema, ALL_VALUES))] * 2)
    assert batch.rejections == []
    assert batch.fast_rows == 0  # nested types: always per record
    expected = ALL_VALUES | {"m": [{"key": "k", "value": 1}, {"key": "j", "value": -2}], ROW: 1}
    assert batch.frame.row(1, named=True) == expected


FLAT: dict[str, Any] = {
    "type": "record",
    "name": "Flat",
    "namespace": "t",
    "fields": [
        field("b", "boolean"),
        field("i", "int"),
        field("l", ["long", "null"]),
        field("f", "float"),
        field("s", ["null", "string"]),
        field("by", "bytes"),
        field("e", {"type": "enum", "name": "E", "symbols": [f"S{n}" for n in range(70)]}),
        field("fx", {"type": "fixed", "name": "F2", "size": 2}),
        field("tsu", logical("long", "timestamp-micros")),
        field("ltsm", ["null", logical("long", "local-timestamp-millis")]),
        field("day", logical("int", "date")),
    ],
}
FLAT_JSON = json.dumps(FLAT)


def flat(i: int) -> dict[str, Any]:
    return {
        "b": i % 2 == 0, "i": -(2**31) if i == 3 else i * 1000, "l": None if i % 3 else 2**62 - i,
        "f": 0.5 * i, "s": None if i % 4 == 1 else "ü" * (i % 70), "by": bytes(i % 200),
        "e": f"S{i % 70}", "fx": b"xy",
        "tsu": dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=i),
        "ltsm": None if i % 2 else dt.datetime(1969, 12, 31, 23, 59, 59),
        "day": dt.date(2026, 5, 1),
    }  # fmt: skip


def test_the_batch_path_takes_flat_records_and_matches_the_per_record_path() -> None:
    values = [framed(5, encode(FLAT_JSON, flat(i))) for i in range(300)]
    fast = decoder(FLAT_JSON, FAST, s5=FLAT_JSON).decode(values)
    slow = decoder(FLAT_JSON, SLOW, s5=FLAT_JSON).decode(values)
    assert fast.fast_rows == 300
    assert slow.fast_rows == 0
    assert fast.rejections == slow.rejections == []
    assert fast.frame.equals(slow.frame)
    assert fast.frame.schema == pl.Schema(polars_schema(FLAT) | {ROW: pl.Int64()})
    assert fast.frame.drop(ROW).row(7, named=True) == flat(7)


def test_a_record_without_varints_takes_the_batch_path() -> None:
    plain = {"type": "record", "name": "P", "fields": [field("s", "string"), field("d", "double")]}
    schema = json.dumps(plain)
    values = [framed(6, encode(schema, {"s": "x" * i, "d": i / 3})) for i in range(200)]
    batch = decoder(schema, FAST, s6=schema).decode(values)
    assert batch.fast_rows == 200
    assert batch.frame["s"].to_list() == ["x" * i for i in range(200)]


def test_named_type_references_fall_back_to_the_per_record_path() -> None:
    again = json.dumps(FLAT | {"fields": [*FLAT["fields"], field("again", ["null", "t.E"])]})
    values = [framed(5, encode(again, flat(i) | {"again": f"S{i}"})) for i in range(50)]
    batch = decoder(again, FAST, s5=again).decode(values)  # read_avro cannot read "t.E"
    assert batch.fast_rows == 0
    assert batch.rejections == []
    assert batch.frame["again"].to_list() == [f"S{i}" for i in range(50)]


def test_only_a_writer_identical_to_the_reader_takes_the_batch_path() -> None:
    v2_again = json.dumps(json.loads(V2) | {"doc": "same shape, other words"})
    values = [framed(7, encode(V2, payment(i))) for i in range(10)]
    assert decoder(V2, FAST, s7=v2_again).decode(values).fast_rows == 10
    assert decoder(V2, 11, s7=v2_again).decode(values).fast_rows == 0  # below the minimum


# -------------------------------------------------------------------------- bad bodies


def varint(n: int) -> bytes:
    z, out = 2 * n if n >= 0 else -2 * n - 1, bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    return bytes([*out, z])


GOOD = encode(V2, payment(0))
MORE_CHANNELS = V2.replace(
    '"WALLET"', '"WALLET", "X1", "X2", "X3", "X4", "X5", "X6", "X7", "X8", "X9"'
)
BAD_BODIES = {
    "truncated": GOOD[:-1],
    "header only": b"",
    "trailing byte": GOOD + b"\x00",
    "two records": GOOD + GOOD,
    "junk": b"\xff" * 20,
    "huge length": varint(2**62) + b"abc",
    "negative length": varint(-3) + b"abc",
    "bad utf-8": varint(2) + b"\xff\xfe" + GOOD[1 + GOOD[0] // 2 :],
    "enum index out of range": encode(MORE_CHANNELS, payment(0, channel="X9")),
}


@pytest.mark.parametrize("fast", [FAST, SLOW])
@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_a_bad_body_is_one_decode_error_and_its_neighbours_decode(fast: int, name: str) -> None:
    values = [framed(2, encode(V2, payment(i))) for i in range(100)]
    values[41] = framed(2, BAD_BODIES[name])
    batch = decoder(V2, fast).decode(values)
    assert reasons(batch) == [(41, Reason.DECODE_ERROR)]
    assert rows(batch) == [payment(i) | {ROW: i} for i in range(100) if i != 41]
    assert batch.fast_rows == (99 if fast == FAST else 0)  # the bad body alone falls back
    slow = decoder(V2, SLOW).decode(values)
    assert batch.frame.equals(slow.frame)
    assert batch.rejections == slow.rejections


PII_NUMBER = 918_273_645_501
PII = json.dumps({"type": "record", "name": "P", "fields": [
    {"name": "id", "type": "string"}, {"name": "card", "type": "string"},
    {"name": "ref", "type": "long", "pii": True}, {"name": "ip", "type": "string", "pii": True},
]})  # fmt: skip


def pii_body(i: int) -> bytes:
    return encode(PII, {"id": f"p{i}", "card": "card_000001", "ref": PII_NUMBER,
                        "ip": "pii-canary-ip"})  # fmt: skip


def leaky_bodies() -> dict[str, bytes]:
    """Bodies whose failures a reader describes with what it read from them."""
    good = pii_body(0)
    head = good[: 1 + good[0] // 2]  # the id: its length byte and text
    card = 1 + good[len(head)] // 2
    return {
        "card left out": head + good[len(head) + card :],  # ref is read as card's length
        "ip cut short": good[:-3],
        "ip not utf-8": good[:-2] + b"\xff\xfe",
    }


@pytest.mark.parametrize("fast", [FAST, SLOW])
def test_messages_of_unreadable_bodies_quote_nothing_read_from_them(
    fast: int, capfd: pytest.CaptureFixture[str]
) -> None:
    bad = leaky_bodies()
    values = [framed(1, pii_body(i)) for i in range(300)] + [framed(1, b) for b in bad.values()]
    batch = BatchDecoder(PII, Registry({1: PII}), fast_path_min_records=fast).decode(values)
    messages = [r.message for r in batch.rejections]
    assert len(messages) == len(bad)
    assert ["EOFError" in m for m in messages] == [True, True, False]
    assert "UnicodeDecodeError: a string in the body is not UTF-8" in messages[2]
    for text in [*messages, capfd.readouterr().err]:
        assert str(PII_NUMBER) not in text
        assert "canary" not in text
        assert "panicked" not in text


def test_a_read_avro_panic_quotes_a_value_but_never_reaches_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    from polars.exceptions import PanicException

    from featurestore.contracts.avro_block import _container_header, _varint

    bodies = [pii_body(0), leaky_bodies()["card left out"]]
    data = b"".join(bodies)
    sync = _container_header(PII)[-16:]
    container = _container_header(PII) + _varint(2) + _varint(len(data)) + data + sync
    with pytest.raises(PanicException):  # what happens without the guard
        pl.read_avro(io.BytesIO(container))
    assert str(PII_NUMBER) in capfd.readouterr().err
    values = [framed(1, pii_body(i)) for i in range(300)] + [framed(1, bodies[1])]
    batch = BatchDecoder(PII, Registry({1: PII}), fast_path_min_records=FAST).decode(values)
    assert reasons(batch) == [(300, Reason.DECODE_ERROR)]
    assert batch.fast_rows == 300
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("pii", [True, False])
def test_the_enum_symbol_a_reader_lacks_is_named_unless_the_field_is_pii(pii: bool) -> None:
    enum = {"type": "enum", "name": "Level", "symbols": ["GOLD", "PLATINUM"]}
    writer = json.dumps({"type": "record", "name": "R", "namespace": "ns", "fields": [
        {"name": "l", "type": ["null", enum], "pii": pii}]})  # fmt: skip
    reader = writer.replace(', "PLATINUM"', "")
    body = encode(writer, {"l": "PLATINUM"})
    batch = BatchDecoder(reader, Registry({3: writer})).decode([framed(3, body)])
    (rejection,) = batch.rejections
    assert rejection.reason is Reason.INCOMPATIBLE_SCHEMA
    assert ("PLATINUM" in rejection.message) is not pii
    assert "not found in reader symbol list ns.Level" in rejection.message


FLAT_BYTES = {  # one FLAT record, field by field, in the schema's order
    "b": b"\x01", "i": varint(7), "l": b"\x02", "f": b"\x00\x00\x00\x3f", "s": b"\x00",
    "by": varint(0), "e": varint(3), "fx": b"xy", "tsu": varint(5), "ltsm": b"\x00",
    "day": varint(9),
}  # fmt: skip


def flat_body(**changes: bytes) -> bytes:
    """A FLAT record built byte by byte, to reach values a writer never produces."""
    return b"".join((FLAT_BYTES | changes).values())


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        (flat_body(), None),
        (flat_body(b=b"\x05"), None),  # fastavro reads any non-zero byte as true
        (flat_body(i=varint(2**40)), "i"),  # no int holds it (read_avro would wrap it)
        (flat_body(l=b"\x00" + varint(2**64 + 5)), None),  # fastavro wraps longs, too
        (flat_body(l=b"\x04" + varint(1)), Reason.DECODE_ERROR),  # union index 2 of 2
        (flat_body(s=b"\x0a"), Reason.DECODE_ERROR),  # union index 5 (read_avro: branch 1)
    ],
)
def test_values_the_batch_reader_would_wrap_or_remap_match_the_per_record_path(
    body: bytes, outcome: str | Reason | None
) -> None:
    values = [framed(5, flat_body())] * 3 + [framed(5, body)]
    fast = decoder(FLAT_JSON, FAST, s5=FLAT_JSON).decode(values)
    slow = decoder(FLAT_JSON, SLOW, s5=FLAT_JSON).decode(values)
    assert fast.frame.equals(slow.frame)
    assert fast.rejections == slow.rejections
    if outcome is None:
        assert fast.frame.height == 4
        assert fast.frame["b"][3] is True
    else:
        assert reasons(fast) == [(3, Reason.DECODE_ERROR)]
        assert fast.frame.height == 3
        if not isinstance(outcome, Reason):  # a field that cannot hold the value
            assert fast.rejections[0].field == outcome
            assert str(2**40) not in fast.rejections[0].message  # no value in the message


def both_paths(schema: str, values: list[bytes], fast: int = FAST) -> DecodedBatch:
    """The batch decode of `values`, checked identical to the per-record path's."""
    batch = decoder(schema, fast, s5=schema).decode(values)
    slow = decoder(schema, SLOW, s5=schema).decode(values)
    assert batch.frame.equals(slow.frame)
    assert batch.frame.schema == slow.frame.schema
    assert batch.rejections == slow.rejections
    assert slow.fast_rows == 0
    accounted(batch, len(values))
    return batch


@pytest.mark.parametrize("fast", [FAST, 1000])
def test_a_few_truncated_bodies_leave_the_other_records_on_the_batch_path(fast: int) -> None:
    rng = random.Random(11)
    bodies = [encode(FLAT_JSON, flat(i)) for i in range(10_000)]
    bad = sorted(rng.sample(range(10_000), 20))
    values = [framed(5, b[: -rng.randint(1, 3)] if i in bad else b) for i, b in enumerate(bodies)]
    batch = both_paths(FLAT_JSON, values, fast)
    assert [r.row for r in batch.rejections] == bad
    assert batch.fast_rows > 9_000


@pytest.mark.parametrize(
    "bad",
    [[0], [299], [0, 299], [150, 151], [150, 151, 152, 153], list(range(0, 300, 2)),
     list(range(300))],
    ids=["first", "last", "first and last", "adjacent", "four adjacent", "every other", "all"],
)  # fmt: skip
@pytest.mark.parametrize("how", ["truncated", "trailing byte", "int overflow"])
def test_bad_bodies_anywhere_in_a_block_match_the_per_record_path(bad: list[int], how: str) -> None:
    def body(i: int) -> bytes:
        if i not in bad:
            return flat_body(tsu=varint(i))
        if how == "truncated":
            return flat_body(tsu=varint(i))[:-1]
        if how == "trailing byte":
            return flat_body(tsu=varint(i)) + b"\x00"
        return flat_body(i=varint(2**40 + i))  # read_avro wraps it: the proof rejects it

    values = [framed(5, body(i)) for i in range(300)]
    batch = both_paths(FLAT_JSON, values)
    assert [r.row for r in batch.rejections] == bad
    assert batch.fast_rows == 300 - len(bad)


@given(
    st.lists(
        st.sampled_from([framed(5, b"x"), framed(5, b""), framed(6, b"y"), b"\x01" + bytes(16),
                         b"\x00\x00\x00", b"", None, b"\x07abcdef"]),
        min_size=1, max_size=6,
    )
)  # fmt: skip
def test_values_framed_alike_are_split_as_parse_frame_splits_each(
    values: list[bytes | None],
) -> None:
    """The batch's shortcut for values all framed alike gives what `parse_frame` gives
    each; any other batch takes `parse_frame` value by value."""
    alike = _framed_alike(values, [[] for _ in values])
    try:
        each = [parse_frame(v) for v in values]
    except FrameError:
        assert alike is None
        return
    if alike is None:
        assert len({ref for ref, _ in each}) > 1
    else:
        assert each == [(alike[0], body) for body in alike[1]]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, 199), st.sampled_from(["cut", "extend", "flip"]),
                  st.integers(0, 10_000)),
        max_size=6,
    )
)  # fmt: skip
def test_mutated_bodies_among_good_ones_decode_as_the_per_record_path(
    mutations: list[tuple[int, str, int]],
) -> None:
    """Bodies cut short, extended or with a byte flipped, anywhere among good ones: the
    batch path (the walk's hint, the blocks, the proof) returns what the per-record path
    does, row for row and rejection for rejection."""
    bodies = [encode(FLAT_JSON, flat(i)) for i in range(200)]
    for row, how, x in mutations:
        body = bodies[row]
        if how == "cut":
            bodies[row] = body[: len(body) - 1 - x % min(4, len(body))]
        elif how == "extend":
            bodies[row] = body + bytes([x % 256])
        else:
            k = x % len(body)
            bodies[row] = body[:k] + bytes([body[k] ^ (1 + x % 255)]) + body[k + 1 :]
    both_paths(FLAT_JSON, [framed(5, b) for b in bodies])


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 1_000_000))
def test_the_walk_passes_every_body_fastavro_writes(first: int) -> None:
    """The walk's hint (`skim`) never sends a well-written body per record."""
    block = decoder(FLAT_JSON, FAST, s5=FLAT_JSON)._writer(5).block
    assert block is not None
    assert block.unparsed([encode(FLAT_JSON, flat(i)) for i in range(first, first + 100)]) == []


@pytest.mark.parametrize("walk", [True, False], ids=["with the walk", "the proof alone"])
def test_a_record_that_overruns_its_body_is_not_trusted_though_it_fits_its_length(
    walk: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Body 0's string length is a 2-byte varint (non-canonical) of 3: read in one block,
    it takes the first byte of body 1 and then fits its own 3 bytes; body 1, read from its
    second byte, does not fit. The records before the first one the proof rejects are
    therefore not trusted on their own: body 0 is read again, alone. The walk over each
    body (`skim`) sends body 0 per record before any block is read; without it (a hint
    only), the proof alone keeps it out."""
    if not walk:
        monkeypatch.setattr(BlockReader, "unparsed", lambda _self, _bodies: [])
    schema = json.dumps({"type": "record", "name": "S", "fields": [field("s", "string")]})
    overrun, short = bytes([0x80 | 6, 0x00]) + b"ab", bytes([0x02, 0x00])
    values = [framed(5, overrun), framed(5, short), framed(5, short)]
    batch = both_paths(schema, values)
    assert reasons(batch) == [(0, Reason.DECODE_ERROR)]  # fastavro: 3 bytes expected, 2 read
    # Without the walk, body 1 goes per record, where the proof failed; with it, bodies 1
    # and 2 are read as one block.
    assert batch.fast_rows == (2 if walk else 1)


def test_schemas_without_a_column_type_are_contract_errors() -> None:
    with pytest.raises(ContractError, match="several non-null types"):
        polars_schema({"type": "record", "name": "U", "fields": [field("u", ["int", "string"])]})
    with pytest.raises(ContractError, match="record"):
        polars_schema('"string"')
    with pytest.raises(ContractError, match="contains itself"):
        polars_schema({"type": "record", "name": "L", "fields": [field("next", ["null", "L"])]})


# -------------------------------------------------------------------------- properties

texts = st.text(max_size=80)
payments: st.SearchStrategy[dict[str, Any]] = st.builds(
    dict,
    payment_id=texts,
    card_id=texts,
    amount=st.floats(allow_nan=False),
    currency=texts,
    merchant_id=texts,
    merchant_category=texts,
    country=texts,
    channel=st.sampled_from(["POS", "ONLINE", "ATM", "MOTO", "WALLET"]),
    ip_address=st.none() | texts,
    device_id=st.none() | texts,
    ts=st.integers(-(2**63), 2**63 - 1),
)
# each entry: (kind, record, cut or extra bytes, whether to frame the junk)
entries = st.one_of(
    st.tuples(st.just("valid"), payments, st.just(b""), st.just(True)),
    st.tuples(st.just("junk"), st.none(), st.binary(max_size=60), st.booleans()),
    st.tuples(
        st.just("prefix"),
        payments,
        st.integers(0, 10_000).map(lambda n: n.to_bytes(2, "big")),
        st.just(True),
    ),
    st.tuples(st.just("trailing"), payments, st.binary(min_size=1, max_size=8), st.just(True)),
    st.tuples(st.just("flipped"), payments, st.binary(min_size=3, max_size=3), st.just(True)),
)


def build(entry: tuple[str, dict[str, Any] | None, bytes, bool]) -> bytes:
    kind, record, extra, frame = entry
    if record is None:
        return framed(2, extra) if frame else extra
    body = encode(V2, record)
    if kind == "prefix":
        body = body[: int.from_bytes(extra, "big") % len(body)]
    elif kind == "trailing":
        body += extra
    elif kind == "flipped":
        at = int.from_bytes(extra[:2], "big") % len(body)
        body = body[:at] + extra[2:] + body[at + 1 :]
    return framed(2, body)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(entries, max_size=40), st.sampled_from([FAST, SLOW]))
def test_any_bytes_among_valid_records_are_accounted_for_once(
    batch_entries: list[tuple[str, dict[str, Any] | None, bytes, bool]], fast: int
) -> None:
    batch = decoder(V2, fast).decode([build(e) for e in batch_entries])
    accounted(batch, len(batch_entries))
    decoded = {r[ROW]: r for r in rows(batch)}
    for i, (kind, record, _, _) in enumerate(batch_entries):
        if kind == "valid":
            assert record is not None
            assert decoded[i] == record | {ROW: i}
        elif kind in ("prefix", "trailing"):  # Avro records are prefix-free: never valid
            assert i not in decoded
    for r in batch.rejections:  # unframed junk may name an id the registry lacks
        unknown = r.reason is Reason.UNKNOWN_SCHEMA and batch_entries[r.row][0] == "junk"
        assert r.reason is Reason.DECODE_ERROR or unknown


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(entries, min_size=1, max_size=40))
def test_the_batch_path_and_the_per_record_path_agree_on_any_batch(
    batch_entries: list[tuple[str, dict[str, Any] | None, bytes, bool]],
) -> None:
    values = [build(e) for e in batch_entries]
    fast, slow = decoder(V2, FAST).decode(values), decoder(V2, SLOW).decode(values)
    assert fast.frame.equals(slow.frame)
    assert fast.rejections == slow.rejections


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, 299), st.integers(0, 200), st.binary(max_size=2)),
        min_size=1,
        max_size=30,
    )
)
def test_both_paths_agree_on_flat_records_with_bytes_replaced(
    changes: list[tuple[int, int, bytes]],
) -> None:
    """Booleans, ints, longs, enums and unions with any bytes put in place of one byte."""
    values = []
    for i, position, new in changes:
        body = encode(FLAT_JSON, flat(i))
        at = position % len(body)
        values.append(framed(5, body[:at] + new + body[at + 1 :]))
    fast = decoder(FLAT_JSON, FAST, s5=FLAT_JSON).decode(values)
    slow = decoder(FLAT_JSON, SLOW, s5=FLAT_JSON).decode(values)
    assert fast.frame.equals(slow.frame)
    assert fast.rejections == slow.rejections
    accounted(fast, len(values))


PAYMENT = (Path(__file__).parents[3] / "schemas" / "card_payment.v1.avsc").read_text()


@pytest.mark.parametrize("fast", [FAST, SLOW])
def test_a_body_cut_short_says_so_whatever_fastavro_raises(fast: int) -> None:
    """Cut inside the last fields, fastavro raises IndexError rather than EOFError; an
    out-of-range union branch raises IndexError too, with bytes left: not cut short."""
    body = encode(PAYMENT, {
        "payment_id": "p1", "card_id": "card_000001", "amount": 12.5, "currency": "EUR",
        "merchant_id": "m", "merchant_category": "5411", "country": "DE", "channel": "POS",
        "ip_address": None, "ts": 1_700_000_000_000,
    })  # fmt: skip
    union = len(body) - 7  # the ip_address branch, before the 6-byte ts
    bad_branch = body[:union] + b"\x7e" + body[union + 1 :]
    cut = [body[:n] for n in range(len(body) - 5, len(body))]  # inside ts
    good = [framed(1, body)] * 300
    decoder = BatchDecoder(PAYMENT, Registry({1: PAYMENT}), fast_path_min_records=fast)
    batch = decoder.decode([*good, *(framed(1, b) for b in [*cut, bad_branch])])
    messages = [r.message for r in batch.rejections]
    assert len(messages) == len(cut) + 1
    assert all("cut short" in m for m in messages[:-1]), messages
    assert "cut short" not in messages[-1]
    assert "IndexError" in messages[-1]

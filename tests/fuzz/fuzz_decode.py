"""Coverage-guided fuzz target (atheris) for the consumer's validate path: `BatchDecoder`
then `compile_checks` + `split`, chained as ``ConsumerRuntime._validate`` chains them.

Run it directly (atheris installs on CPython 3.11+ on x86-64 Linux only):

    .venv/bin/python tests/fuzz/fuzz_decode.py CORPUS_DIR -max_total_time=120

Any other libFuzzer flag may follow. The seeds (valid and broken card payments of every
schema version, framed as the Confluent serializer frames them) are written into the
first corpus directory given, which is created if missing, so mutation starts past the
5-byte prefix. A crash is written as ``crash-<sha1>`` (see ``-artifact_prefix``); replay
it with ``fuzz_decode.py crash-<sha1>``.

One input is one micro-batch:

    byte 0      options: bits 0-1 the reader contract (v1, v2, v3, v1), bit 2 Kafka
                headers mode, bit 3 a consumer retention of 3 days, bit 4 batch path
                runs of at least 8 records (else of 1)
    then        chunks, each a 2-byte big-endian length and that many bytes (0xFFFF: a
                null value, no bytes follow); a short last chunk takes what is left. In
                headers mode chunks pair up as (``__value_schema_id`` header, value):
                an empty header chunk means no header, 0xFFFF a header whose value is null

Writer schemas come from a fixed in-memory registry: ids 1-3 are schemas/card_payment.v*
.avsc, `GUID` names v2, id 4 holds text that does not parse, and every other id is
unknown. The clock is fixed at `NOW_MS`.

Properties, any failure of which is a crash:
- no exception escapes decode or split;
- every input row ends in exactly one place: a valid row or one rejection with a reason
  and a message (valid + rejected == input);
- the decoder's batch path and its per-record path give the same frame and rejections.
"""

from __future__ import annotations

import io
import json
import os
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import atheris

# polars.read_avro panics on some malformed blocks (the decoder catches that and falls
# back); a Rust backtrace per panic would cut the executions per second ~15-fold.
os.environ["RUST_BACKTRACE"] = "0"

# The batch decode's walk is compiled by numba from its Python bytecode: instrumented,
# numba cannot compile it. It runs, uninstrumented (a hint only: the proof decides).
with atheris.instrument_imports(include=["featurestore"], exclude=["featurestore.contracts.skim"]):
    from featurestore.contracts import BatchDecoder, compile_checks, parse_contract, split
    from featurestore.contracts.codec import ROW, VALUE_SCHEMA_ID_HEADER, SchemaRef
    from featurestore.contracts.violations import Reason, Rejection

import fastavro

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
TEXTS = {n: (SCHEMAS / f"card_payment.v{n}.avsc").read_text() for n in (1, 2, 3)}
GUID = "8a1c5e0e-4f7b-4f43-9d8e-2b51c3f3a001"
REGISTRY: dict[SchemaRef, str] = {**TEXTS, GUID: TEXTS[2], 4: '{"type": "record", "name": '}
NOW_MS = 1_790_000_000_000  # 2026-09-21
RETENTION_MS = 3 * 86_400_000
NULL = 0xFFFF
MAX_RECORDS = 64
FAST, RUNS_OF_8, SLOW = 1, 8, 10**9  # fast_path_min_records: the batch path's floor


def fetch_writer(ref: SchemaRef) -> str:
    return REGISTRY[ref]  # KeyError: an unknown schema, as the decoder expects


DECODERS = {
    (n, fast): BatchDecoder(text, fetch_writer, fast_path_min_records=fast)
    for n, text in TEXTS.items()
    for fast in (FAST, RUNS_OF_8, SLOW)
}
CHECKS = {n: compile_checks(parse_contract(text)) for n, text in TEXTS.items()}
STATS: Counter[str] = Counter()


def chunks(data: bytes) -> Iterator[bytes | None]:
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            yield data[pos:]
            return
        size = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if size == NULL:
            yield None
            continue
        yield data[pos : pos + size]
        pos += size


def batch_of(data: bytes) -> tuple[int, int, list[bytes | None], list[Any], int | None]:
    """The reader version, batch path floor, values, headers and retention of an input."""
    options = data[0] if data else 0
    reader = (options & 3) % 3 + 1
    retention = RETENTION_MS if options & 8 else None
    fast = RUNS_OF_8 if options & 16 else FAST
    parts = list(chunks(data[1:]))
    if not options & 4:
        return reader, fast, parts[:MAX_RECORDS], [], retention
    values: list[bytes | None] = []
    headers: list[Any] = []
    for header, value in zip(parts[::2], parts[1::2], strict=False):
        headers.append([] if header == b"" else [(VALUE_SCHEMA_ID_HEADER, header)])
        values.append(value)
    return reader, fast, values[:MAX_RECORDS], headers[:MAX_RECORDS], retention


def check_one(data: bytes) -> None:
    reader, fast, values, headers, retention = batch_of(data)
    decoded = DECODERS[reader, fast].decode(values, headers)
    slow = DECODERS[reader, SLOW].decode(values, headers)
    assert decoded.frame.schema == slow.frame.schema, "the two decode paths differ in types"
    assert decoded.frame.equals(slow.frame), "the two decode paths give different rows"
    assert decoded.rejections == slow.rejections, "the two decode paths reject differently"
    valid, broken = split(decoded.frame, CHECKS[reader], NOW_MS, retention)
    rejections = [*decoded.rejections, *broken]
    placed = [*valid.get_column(ROW).to_list(), *(r.row for r in rejections)]
    assert sorted(placed) == list(range(len(values))), f"rows not placed once: {placed}"
    for r in rejections:
        assert isinstance(r, Rejection), r
        assert isinstance(r.reason, Reason), r
        assert r.message, r
    count(len(values), valid.height, rejections, decoded.fast_rows)


def count(rows: int, valid: int, rejections: list[Rejection], fast_rows: int) -> None:
    STATS.update(inputs=1, rows=rows, valid=valid, fast_rows=fast_rows)
    STATS.update(r.reason.value for r in rejections)
    if STATS["inputs"] & (STATS["inputs"] - 1) == 0:  # at powers of two, as libFuzzer does
        print("fuzz_decode: " + " ".join(f"{k}={v}" for k, v in sorted(STATS.items())),
              file=sys.stderr, flush=True)  # fmt: skip


# --- seeds: Confluent-framed card payments, as the serializer writes them --------------


def payment(i: int, version: int, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "payment_id": f"pay_{i:08d}",
        "card_id": f"card_{i:06d}",
        "amount": 12.5 + i if version < 3 else b"\x04\xe2",
        "currency": "EUR",
        "merchant_id": f"m_{i}",
        "merchant_category": "5411",
        "country": "DE",
        "channel": ("POS", "ONLINE", "ATM", "MOTO")[i % 4],
        "ip_address": None if i % 2 else "10.0.0.1",
        "device_id": None if i % 3 else f"dev_{i}",
        "risk_score": 0.25,
        "ts": NOW_MS - 60_000 * i,
    }
    return record | changes


def framed(version: int, record: dict[str, Any], schema_id: int | None = None) -> bytes:
    parsed = fastavro.parse_schema(json.loads(TEXTS[version]))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parsed, record)
    return b"\x00" + (schema_id or version).to_bytes(4, "big") + body.getvalue()


def chunk(value: bytes | None) -> bytes:
    return NULL.to_bytes(2, "big") if value is None else len(value).to_bytes(2, "big") + value


def seeds() -> dict[str, bytes]:
    """Named inputs: valid records of each writer, and ones each rejection reason takes."""
    v1, v2, v3 = (framed(n, payment(1, n)) for n in (1, 2, 3))
    broken = [
        framed(2, payment(2, 2, amount=-1.0, card_id="nope")),  # CONSTRAINT_VIOLATION
        framed(2, payment(3, 2, card_id="")),  # MISSING_ENTITY
        framed(2, payment(4, 2, ts=NOW_MS - 30 * 86_400_000)),  # LATE_EVENT
        framed(2, payment(5, 2, ts=NOW_MS + 3_600_000)),  # FUTURE_EVENT
        framed(2, payment(6, 2, amount=float("nan"))),
        framed(1, payment(7, 1), schema_id=99),  # UNKNOWN_SCHEMA
        framed(1, payment(8, 1), schema_id=4),  # a writer that does not parse
        v2[:-3],  # truncated body
        v2 + b"\x00",  # trailing byte
        b"\x01junk",  # no magic byte
        None,  # a tombstone
    ]
    valid2 = [framed(2, payment(i, 2)) for i in range(8)]
    guid = b"\x01" + uuid.UUID(GUID).bytes
    headed = [(guid, v2[5:]), (b"\x00" + (1).to_bytes(4, "big"), v1[5:]), (b"", v2), (b"", v3)]
    return {
        "seed-v1": b"\x00" + chunk(v1),
        "seed-v2": b"\x01" + chunk(v2),
        "seed-v3": b"\x02" + chunk(v3),
        "seed-v2-batch": b"\x01" + b"".join(map(chunk, valid2)),
        "seed-v2-batch-runs-of-8": b"\x11" + b"".join(map(chunk, [*valid2, v1, *valid2])),
        "seed-v2-mixed": b"\x09" + b"".join(map(chunk, [v1, v2, v3, *broken, *valid2])),
        "seed-v3-mixed": b"\x02" + b"".join(map(chunk, [v1, v2, v3, *broken])),
        "seed-v2-headers": b"\x05" + b"".join(chunk(h) + chunk(v) for h, v in headed),
    }


def main(argv: list[str]) -> None:
    corpus = next((arg for arg in argv[1:] if not arg.startswith("-")), None)
    if corpus is not None and not Path(corpus).is_file():  # a file is an input to replay
        Path(corpus).mkdir(parents=True, exist_ok=True)
        for name, data in seeds().items():
            (Path(corpus) / name).write_bytes(data)
    atheris.Setup(argv, check_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)

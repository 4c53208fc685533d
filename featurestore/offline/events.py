"""The offline event store: validated events per contract in Parquet, hive-partitioned
by event date, with ``_topic``, ``_partition`` and ``_offset`` columns.

Invariants:
- A file appears whole or not at all: it is written under a temporary name and renamed;
  on a local filesystem the file and its directory are fsynced before ``write`` returns,
  so the consumer may commit offsets after it. A write that fails (a full disk) removes
  its temporary file, so retries do not fill the disk further.
- Replays may write a row twice (a crash between the write and the offset commit);
  readers dedupe by (``_topic``, ``_partition``, ``_offset``), so no row is ever counted
  twice.
- Local paths and every URI a pyarrow filesystem understands (s3://, gs://, ...) work.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from featurestore import crashpoints
from featurestore.errors import ConfigError

SOURCE_COLUMNS = ("_topic", "_partition", "_offset")
DATE_COLUMN = "event_date"


def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    if "://" in root:
        fs, path = pafs.FileSystem.from_uri(root)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), str(Path(root).resolve())


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(fs: pafs.FileSystem, path: str) -> None:
    with contextlib.suppress(OSError):  # never created, or the filesystem is away too
        fs.delete_file(path)


class EventWriter:
    """Appends validated events of one contract (one folder per subject)."""

    def __init__(self, root: str, subject: str, event_time: str) -> None:
        self.fs, base = _filesystem(root)
        self.base = f"{base}/{subject}"
        self.event_time = event_time
        self._local = isinstance(self.fs, pafs.LocalFileSystem)

    def write(self, frame: pl.DataFrame) -> list[str]:
        """Write ``frame`` (contract fields plus the source columns); returns the files."""
        return self.store(self.encode(frame))

    def encode(self, frame: pl.DataFrame) -> list[tuple[Any, bytes]]:
        """What `write` stores for ``frame``, in memory: one Parquet file's bytes per
        event date. Raises what writing would raise on the events' values, with nothing
        stored, so a consumer can tell the one record a batch fails on."""
        if frame.is_empty():
            return []
        missing = [c for c in (*SOURCE_COLUMNS, self.event_time) if c not in frame.columns]
        if missing:
            raise ValueError(f"events to write lack the columns {missing}")
        dated = frame.with_columns(pl.col(self.event_time).dt.date().alias(DATE_COLUMN))
        out = []
        for (day,), rows in dated.group_by(DATE_COLUMN, maintain_order=True):
            buffer = io.BytesIO()
            pq.write_table(rows.drop(DATE_COLUMN).to_arrow(), buffer, compression="zstd")
            out.append((day, buffer.getvalue()))
        return out

    def store(self, encoded: list[tuple[Any, bytes]]) -> list[str]:
        """Store what `encode` made, one new file per event date; returns the files."""
        written = []
        for day, data in encoded:
            folder = f"{self.base}/{DATE_COLUMN}={day}"
            name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:12]}.parquet"
            written.append(self._write_file(folder, name, data))
        return written

    def _write_file(self, folder: str, name: str, data: bytes) -> str:
        self.fs.create_dir(folder, recursive=True)
        final, temporary = f"{folder}/{name}", f"{folder}/.{name}.tmp"
        try:
            with self.fs.open_output_stream(temporary) as out:
                out.write(data)
            if self._local:
                _fsync(temporary)
        except BaseException:  # a full disk: a retry must not find it fuller by this file
            _discard(self.fs, temporary)
            raise
        crashpoints.reach("offline.temporary")
        self.fs.move(temporary, final)
        if self._local:
            _fsync(folder)
        return final


_WIDEN = pl.ScanCastOptions(integer_cast="upcast", float_cast="upcast")
_SCHEMAS: dict[tuple[str, str], pl.Schema] = {}  # (root, file) -> its schema; files never change
_SCHEMAS_KEPT = 100_000


def events_schema(root: str, subject: str) -> pl.Schema | None:
    """The one schema all of a subject's files read as (None when there is no file):
    every column of any file, in the order files first show them, each at the supertype
    of its types. So files written under every version of a contract read as one frame:
    a field added later is null before it, a field dropped later is null after, an int
    promoted to long reads as long (Avro's promotions: int -> long -> float -> double).
    All files count, whatever days a scan keeps, so a query of any period can name a
    column (null where it had no values). A type change Polars cannot widen is a
    ConfigError naming the column and a file. Each file's schema is read once per
    process (its footer; files never change once written)."""
    return _union(_stored(root, subject), subject)


def check_readable(root: str, subject: str, columns: pl.Schema, contract: str) -> None:
    """Refuse, before any event is written, a contract whose events could not be read as
    one frame with the subject's files already stored (`events_schema`): a ConfigError
    naming the column, a file and the fix. ``columns`` are the events' columns as
    decoded; they are compared as a file would store them (an empty frame of them
    through Parquet). ``contract`` names it in the message."""
    buffer = io.BytesIO()
    pq.write_table(pl.DataFrame(schema=columns).to_arrow(), buffer)
    buffer.seek(0)
    as_stored = pl.Schema(pl.read_parquet_schema(buffer))
    _union([*_stored(root, subject), (as_stored, contract)], subject)


def _stored(root: str, subject: str) -> list[tuple[pl.Schema, str]]:
    """One (schema, file) per distinct schema among the subject's files."""
    fs, base = _filesystem(root)
    base = f"{base}/{subject}"
    files = _files(fs, base)
    unread = [path for path in files if (root, path) not in _SCHEMAS]
    if len(_SCHEMAS) + len(unread) > _SCHEMAS_KEPT:
        _SCHEMAS.clear()
        unread = files

    if isinstance(fs, pafs.LocalFileSystem):  # Polars reads a local footer in Rust
        read = [pl.Schema(pl.read_parquet_schema(path)) for path in unread]
    else:  # a footer is a request on object storage: several at once, with pyarrow's fs
        with ThreadPoolExecutor(16) as pool:
            arrow = pool.map(lambda path: pq.read_schema(path, filesystem=fs), unread)
            read = [pl.DataFrame(schema.empty_table()).schema for schema in arrow]
    for path, schema in zip(unread, read, strict=True):
        _SCHEMAS[(root, path)] = schema
    distinct: dict[tuple[Any, ...], tuple[pl.Schema, str]] = {}  # a file of each schema
    for path in files:
        schema = _SCHEMAS[(root, path)]
        distinct.setdefault(tuple(schema.items()), (schema, path))
    return list(distinct.values())


def _union(found: list[tuple[pl.Schema, str]], subject: str) -> pl.Schema | None:
    """The schema ``found`` read as together, or a ConfigError naming a column whose
    types do not widen into one (only numeric promotions do)."""
    if not found:
        return None
    union: pl.Schema | None = None
    problem = ""
    try:
        frames = [pl.DataFrame(schema=schema) for schema, _ in found]
        union = pl.concat(frames, how="diagonal_relaxed").schema
    except (pl.exceptions.PolarsError, TypeError) as exc:
        problem = str(exc)
    else:  # Polars would also make text of numbers: only numeric promotions widen
        widest = union
        offender = next(((n, dtype, where) for schema, where in found
                         for n, dtype in schema.items() if not _widens(dtype, widest[n])),
                        None)  # fmt: skip
        if offender is not None:  # and a source whose type it cannot meet
            name, dtype, where = offender
            other, there = next(((s[name], w) for s, w in found if name in s
                                 and not (_widens(s[name], dtype) or _widens(dtype, s[name]))),
                                (widest[name], "another"))  # fmt: skip
            problem = f"column {name!r} is {dtype} in {where} and {other} in {there}"
    if union is None or problem:
        raise ConfigError(
            f"the events of {subject!r} cannot be read as one frame: {problem}. A contract "
            "change must keep each field's type or promote it as Avro does (int -> long -> "
            "float -> double); give the changed field a new name instead"
        )
    return union


def _widens(stored: pl.DataType, read: pl.DataType) -> bool:
    return stored in (read, pl.Null) or (stored.is_numeric() and read.is_numeric())


def _files(fs: pafs.FileSystem, base: str) -> list[str]:
    """The Parquet files under ``base``, in name order; temporary files (dot-named) are
    not events."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except FileNotFoundError:
        return []
    files = [info.path for info in infos if info.type == pafs.FileType.File
             and info.path.endswith(".parquet") and not info.base_name.startswith(".")]  # fmt: skip
    return sorted(files)


def scan_events(
    root: str,
    subject: str,
    *,
    columns: list[str] | None = None,
    event_time: str | None = None,
    between: tuple[int, int] | None = None,
    entities: pl.DataFrame | None = None,
) -> pl.LazyFrame:
    """Events of ``subject``, each (topic, partition, offset) once, ``event_date`` as a
    column from the hive partitioning.

    Optional narrowing, applied before the dedupe so it prunes files and rows: only
    ``columns`` (plus the source columns), only event times (epoch ms, inclusive)
    ``between`` (on ``event_time``; whole days of partitions are skipped), only rows
    whose entity keys appear in ``entities``.
    """
    base = f"{root.rstrip('/')}/{subject}" if "://" in root else str(Path(root).resolve() / subject)
    schema = events_schema(root, subject)  # every contract version's columns
    scan = pl.scan_parquet(
        f"{base}/**/*.parquet", hive_partitioning=True, schema=schema,
        missing_columns="insert", extra_columns="ignore", cast_options=_WIDEN,
    )  # fmt: skip
    if between is not None:
        if event_time is None:
            raise ValueError("`between` needs the `event_time` column")
        first, last = (datetime.fromtimestamp(ms / 1000, UTC).date() for ms in between)
        lo, hi = (pl.from_epoch(pl.lit(ms), time_unit="ms").dt.replace_time_zone("UTC")
                  for ms in between)  # fmt: skip
        scan = scan.filter(
            pl.col(DATE_COLUMN).is_between(first, last), pl.col(event_time).is_between(lo, hi)
        )
    if columns is not None:
        scan = scan.select(sorted({*columns, *SOURCE_COLUMNS}))
    if entities is not None:
        scan = scan.join(entities.lazy(), on=entities.columns, how="semi")
    return scan.unique(subset=list(SOURCE_COLUMNS), keep="first")

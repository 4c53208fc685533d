"""The offline event store: validated events per contract in Parquet, hive-partitioned
by event date, with ``_topic``, ``_partition`` and ``_offset`` columns.

Invariants:
- A file appears whole or not at all: it is written under a temporary name and renamed;
  on a local filesystem the file and its directory are fsynced before ``write`` returns,
  so the consumer may commit offsets after it.
- Replays may write a row twice (a crash between the write and the offset commit);
  readers dedupe by (``_topic``, ``_partition``, ``_offset``), so no row is ever counted
  twice.
- Local paths and every URI a pyarrow filesystem understands (s3://, gs://, ...) work.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from featurestore import crashpoints

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


class EventWriter:
    """Appends validated events of one contract (one folder per subject)."""

    def __init__(self, root: str, subject: str, event_time: str) -> None:
        self.fs, base = _filesystem(root)
        self.base = f"{base}/{subject}"
        self.event_time = event_time
        self._local = isinstance(self.fs, pafs.LocalFileSystem)

    def write(self, frame: pl.DataFrame) -> list[str]:
        """Write ``frame`` (contract fields plus the source columns); returns the files."""
        if frame.is_empty():
            return []
        missing = [c for c in (*SOURCE_COLUMNS, self.event_time) if c not in frame.columns]
        if missing:
            raise ValueError(f"events to write lack the columns {missing}")
        dated = frame.with_columns(pl.col(self.event_time).dt.date().alias(DATE_COLUMN))
        written = []
        for (day,), rows in dated.group_by(DATE_COLUMN, maintain_order=True):
            folder = f"{self.base}/{DATE_COLUMN}={day}"
            name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:12]}.parquet"
            written.append(self._write_file(folder, name, rows.drop(DATE_COLUMN)))
        return written

    def _write_file(self, folder: str, name: str, rows: pl.DataFrame) -> str:
        self.fs.create_dir(folder, recursive=True)
        final, temporary = f"{folder}/{name}", f"{folder}/.{name}.tmp"
        with self.fs.open_output_stream(temporary) as out:
            pq.write_table(rows.to_arrow(), out, compression="zstd")
        if self._local:
            _fsync(temporary)
        crashpoints.reach("offline.temporary")
        self.fs.move(temporary, final)
        if self._local:
            _fsync(folder)
        return final


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
    scan = pl.scan_parquet(f"{base}/**/*.parquet", hive_partitioning=True)
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

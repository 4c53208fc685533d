"""The offline store: validated events in Parquet (``events``), read back deduplicated
by source offset."""

from featurestore.offline.events import EventWriter, check_readable, scan_events

__all__ = ["EventWriter", "check_readable", "scan_events"]

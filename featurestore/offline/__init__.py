"""The offline store: validated events in Parquet (``events``), read back deduplicated
by source offset."""

from featurestore.offline.events import EventWriter, scan_events

__all__ = ["EventWriter", "scan_events"]

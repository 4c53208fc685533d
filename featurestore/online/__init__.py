"""Online store: Redis layout, Lua apply, reads.

`RedisOnlineStore` applies batches of validated events as tile partials (idempotent per
source offset) and reads window values at a time; `connect` makes a client for any
Redis a URL names (standalone, Sentinel, Cluster; AUTH and TLS from the URL).
"""

from featurestore.online.connection import connect, connect_async, redact_url
from featurestore.online.store import ApplyStats, OnlineStore, RedisOnlineStore

__all__ = [
    "ApplyStats",
    "OnlineStore",
    "RedisOnlineStore",
    "connect",
    "connect_async",
    "redact_url",
]

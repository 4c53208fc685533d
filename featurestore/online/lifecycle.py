"""Which version of each feature view is served, which are computed, and who changed it.

State lives in Redis beside the views' keys, so the consumer, every client and every
server see one truth::

    <prefix>:{@views}        hash   view -> {"active": 2, "previous": [1], "shadow": [3],
                                             "retired": []}   (JSON)
    <prefix>:{@views}:log    list   JSON events, newest first: at, who, view, action, ...

(the ``{@views}`` hash tag keeps both in one Cluster slot, so ``lifecycle.lua`` changes a
view's state and logs it in one atomic step), and per view version, in its meta hash
``<prefix>:<view>:v<version>`` (`layout.meta_key`)::

    last_write                  epoch ms of the last write (consumer or backfill)
    through:<topic>:<partition> a backfill applied that partition up to this offset
    live:<topic>:<partition>    the consumer computes this version from this offset on

Roles: ``active`` is served to every client that names no version; ``shadow`` versions
are computed beside it and served only when named (``view@3:feature``); ``previous``
are the versions active before, newest last (what `rollback` returns to); ``retired``
versions are neither computed nor served and their keys are deleted.

Invariants: every change is one compare-and-set of the view's state, so concurrent
operators cannot lose each other's changes and clients switch at once; a version is
promoted only when it has online state (``last_write``).
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from importlib.resources import files
from typing import Any

from featurestore.errors import ConfigError
from featurestore.online.layout import meta_key

_SCRIPT = files("featurestore.online").joinpath("lifecycle.lua").read_text()
LOG_LENGTH = 1000  # events kept


def operator() -> str:
    """Who is acting, for the log: ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class ViewState:
    active: int | None = None
    previous: list[int] = field(default_factory=list)
    shadow: list[int] = field(default_factory=list)
    retired: list[int] = field(default_factory=list)

    @property
    def computed(self) -> set[int]:
        """The versions the consumer keeps current: the active one and those in shadow."""
        return ({self.active} if self.active is not None else set()) | set(self.shadow)

    def role(self, version: int) -> str:
        if version == self.active:
            return "active"
        if version in self.shadow:
            return "shadow"
        if version in self.retired:
            return "retired"
        if version in self.previous:
            return "previous"
        return "declared"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> ViewState:
        if raw is None:
            return cls()
        data = json.loads(raw)
        return cls(data.get("active"), data.get("previous", []), data.get("shadow", []),
                   data.get("retired", []))  # fmt: skip


def state_key(prefix: str) -> str:
    return f"{prefix.rstrip(':')}:{{@views}}"


def states_command(prefix: str, views: list[str]) -> tuple[Any, ...]:
    """The command reading these views' states, for a lookup's own pipeline."""
    return ("HMGET", state_key(prefix), *views)


def parse_states(views: list[str], reply: list[Any]) -> dict[str, ViewState]:
    return {name: ViewState.from_json(raw) for name, raw in zip(views, reply, strict=True)}


class Lifecycle:
    """Read and change the serving state of feature views (any redis-py client)."""

    def __init__(self, client: Any, prefix: str = "fs") -> None:
        self.client = client
        self.prefix = prefix.rstrip(":")
        self.key = state_key(self.prefix)
        self.log_key = f"{self.key}:log"
        self._script = client.register_script(_SCRIPT)

    # --- reading ------------------------------------------------------------------------

    def states(self) -> dict[str, ViewState]:
        raw = self.client.hgetall(self.key)
        return {name.decode(): ViewState.from_json(value) for name, value in raw.items()}

    def state(self, view: str) -> ViewState:
        return ViewState.from_json(self.client.hget(self.key, view))

    def history(self, view: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        events = [json.loads(e) for e in self.client.lrange(self.log_key, 0, LOG_LENGTH)]
        return [e for e in events if view is None or e["view"] == view][:limit]

    def version_info(self, view: str, version: int) -> dict[str, Any]:
        """The version's last write (epoch ms or None) and its backfill / live offsets."""
        raw = {k.decode(): v.decode() for k, v in
               self.client.hgetall(meta_key(self.prefix, view, version)).items()}  # fmt: skip
        return {
            "last_write": int(raw["last_write"]) if "last_write" in raw else None,
            "through": _offsets(raw, "through:"),
            "live": _offsets(raw, "live:"),
        }

    def has_online_state(self, view: str, version: int) -> bool:
        return bool(self.client.hexists(meta_key(self.prefix, view, version), "last_write"))

    # --- what writers record ------------------------------------------------------------

    def record_write(self, view: str, version: int, at_ms: int | None = None) -> None:
        at = at_ms if at_ms is not None else int(time.time() * 1000)
        self.client.hset(meta_key(self.prefix, view, version), "last_write", str(at))

    def record_offsets(
        self, view: str, version: int, kind: str, offsets: dict[tuple[str, int], int]
    ) -> None:
        """``kind`` is ``through`` (a backfill's reach) or ``live`` (the consumer's start)."""
        if offsets:
            mapping = {f"{kind}:{t}:{p}": str(o) for (t, p), o in offsets.items()}
            self.client.hset(meta_key(self.prefix, view, version), mapping=mapping)

    def forget_live(self, view: str, version: int) -> None:
        key = meta_key(self.prefix, view, version)
        fields = [k for k in self.client.hkeys(key) if k.startswith(b"live:")]
        if fields:
            self.client.hdel(key, *fields)

    # --- changing -----------------------------------------------------------------------

    def ensure_active(self, view: str, version: int, who: str) -> ViewState:
        """Make ``version`` active if the view has no active version yet (first start)."""

        def change(state: ViewState) -> ViewState | None:
            return None if state.active is not None else replace(state, active=version)

        return self._change(view, "activate", version, who, change)

    def promote(self, view: str, version: int, who: str | None = None) -> ViewState:
        if not self.has_online_state(view, version):
            raise ConfigError(
                f"view {view!r} version {version} has no online state: backfill it "
                f"(`featurestore backfill {view} --version {version}`) or shadow it and let "
                "the consumer write it first"
            )

        def change(state: ViewState) -> ViewState | None:
            if version in state.retired:
                raise ConfigError(f"view {view!r} version {version} is retired")
            if state.active == version:
                return None
            previous = [v for v in state.previous if v != version]
            if state.active is not None:
                previous.append(state.active)
            shadow = [v for v in state.shadow if v != version]
            return replace(state, active=version, previous=previous, shadow=shadow)

        return self._change(view, "promote", version, who, change)

    def rollback(self, view: str, who: str | None = None) -> ViewState:
        """Back to the version active before the current one, which goes into shadow:
        still computed, so it stays current for a comparison or another promotion
        (retire it to stop that)."""

        def change(state: ViewState) -> ViewState | None:
            candidates = [v for v in state.previous if v not in state.retired]
            if not candidates:
                raise ConfigError(f"view {view!r} has no previous version to roll back to")
            back = candidates[-1]
            if not self.has_online_state(view, back):
                raise ConfigError(f"view {view!r} version {back} has no online state left")
            shadow = [v for v in state.shadow if v != back]
            if state.active is not None and state.active not in shadow:
                shadow.append(state.active)
            previous = [v for v in state.previous if v != back]
            return replace(state, active=back, previous=previous, shadow=shadow)

        return self._change(view, "rollback", None, who, change)

    def shadow(self, view: str, version: int, who: str | None = None) -> ViewState:
        def change(state: ViewState) -> ViewState | None:
            if version in state.retired:
                raise ConfigError(f"view {view!r} version {version} is retired")
            if version == state.active:
                raise ConfigError(f"view {view!r} version {version} is already active")
            if version in state.shadow:
                return None
            return replace(state, shadow=[*state.shadow, version])

        return self._change(view, "shadow", version, who, change)

    def retire(self, view: str, version: int, who: str | None = None) -> ViewState:
        def change(state: ViewState) -> ViewState | None:
            if version == state.active:
                raise ConfigError(
                    f"view {view!r} version {version} is active: promote another version "
                    "(or roll back) before retiring it"
                )
            return replace(
                state,
                previous=[v for v in state.previous if v != version],
                shadow=[v for v in state.shadow if v != version],
                retired=sorted({*state.retired, version}),
            )

        return self._change(view, "retire", version, who, change)

    def delete_keys(self, view: str, version: int, batch: int = 500) -> Iterator[int]:
        """Delete the version's keys in batches of ``batch`` (SCAN + UNLINK: Redis frees
        the memory in the background and is never blocked long); yields keys deleted."""
        pattern = f"{self.prefix}:{view}:v{version}:*"
        keys: list[Any] = []
        for key in self.client.scan_iter(match=pattern, count=batch):
            keys.append(key)
            if len(keys) >= batch:
                yield self._unlink(keys)
                keys = []
        keys.append(meta_key(self.prefix, view, version))
        yield self._unlink(keys) - 1

    def _unlink(self, keys: list[Any]) -> int:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:  # one key per command: Redis Cluster spreads them over slots
            pipe.unlink(key)
        pipe.execute()
        return len(keys)

    def _change(
        self,
        view: str,
        action: str,
        version: int | None,
        who: str | None,
        change: Callable[[ViewState], ViewState | None],
    ) -> ViewState:
        for _ in range(20):
            raw = self.client.hget(self.key, view)
            before = ViewState.from_json(raw)
            after = change(before)
            if after is None:
                return before
            event = {"at": int(time.time() * 1000), "who": who or operator(), "view": view,
                     "action": action, "version": after.active if version is None else version,
                     "active_before": before.active, "active_after": after.active}  # fmt: skip
            expected = "" if raw is None else raw.decode()
            swapped = self._script(keys=[self.key, self.log_key],
                                   args=[view, expected, after.to_json(), json.dumps(event),
                                         LOG_LENGTH])  # fmt: skip
            if swapped == 1:
                return after
        raise ConfigError(f"view {view!r} kept changing under this {action}; try again")


def _offsets(raw: dict[str, str], prefix: str) -> dict[tuple[str, int], int]:
    out = {}
    for name, value in raw.items():
        if name.startswith(prefix):
            topic, _, partition = name.removeprefix(prefix).rpartition(":")
            out[(topic, int(partition))] = int(value)
    return out

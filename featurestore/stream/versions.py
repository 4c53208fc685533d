"""Which versions of its views a consumer computes, and how a version takes over from
its backfill.

At start, a view with no lifecycle state gets its highest declared version activated
(`Lifecycle.ensure_active`); an active version the definitions lack is an error, since
nobody could keep it current. Each batch, the versions computed are the declared ones
that are active or in shadow in the lifecycle state (one read per batch), so
`featurestore views shadow/promote/retire` reach the consumer within a batch.

Hand-over: the first time this process computes a version for a partition, it looks at
the version's marks. With a ``live`` mark, the version has been computed continuously
from there (by this consumer group) and the batch simply applies. Otherwise, with a
``through`` mark (a backfill's reach), the offline events between it and the batch's
first offset are applied first (`backfill.apply_gap`), then ``live`` is recorded at the
batch's first offset; without a backfill the version fills from this batch on. A
version that stops being computed loses its ``live`` marks, so computing it again later
starts over from its backfill. The store's offset guard makes every overlap a no-op.
"""

from __future__ import annotations

import logging

from featurestore.errors import ConfigError
from featurestore.features.definitions import FeatureView
from featurestore.online.lifecycle import Lifecycle, ViewState
from featurestore.online.store import RedisOnlineStore
from featurestore.stream.backfill import Partition, apply_gap

log = logging.getLogger(__name__)
Version = tuple[str, int]


class ComputedViews:
    """The view versions one consumer keeps current, batch by batch."""

    def __init__(
        self,
        views: list[FeatureView],
        store: RedisOnlineStore,
        *,
        who: str,
        offline_root: str | None,
        event_time: str,
    ) -> None:
        self.declared: dict[Version, FeatureView] = {(v.name, v.version): v for v in views}
        self.names = sorted({v.name for v in views})
        self.store = store
        self.lifecycle = Lifecycle(store.client, store.prefix)
        self.who = who
        self.offline_root = offline_root
        self.event_time = event_time
        self._computed: set[Version] = set()
        self._live: set[tuple[Version, Partition]] = set()
        self._warned: set[Version] = set()

    def start(self) -> None:
        """Activate each view's highest declared version where none is active yet."""
        for name in self.names:
            versions = sorted(v for n, v in self.declared if n == name)
            state = self.lifecycle.ensure_active(name, versions[-1], self.who)
            if state.active not in versions:
                raise ConfigError(
                    f"view {name!r} serves version {state.active}, which this consumer does "
                    f"not declare (it has {versions}); declare it, or promote a declared "
                    "version first"
                )

    def current(self, first_offsets: dict[Partition, int]) -> list[FeatureView]:
        """The views to apply this batch (``first_offsets``: the batch's first offset per
        partition), each handed over where it starts being computed."""
        states = self.lifecycle.states()
        wanted: set[Version] = set()
        for name in self.names:
            for version in states.get(name, ViewState()).computed:
                if (name, version) in self.declared:
                    wanted.add((name, version))
                elif (name, version) not in self._warned:
                    self._warned.add((name, version))
                    log.warning("view %s version %d is computed by the lifecycle state but not "
                                "declared here; not computing it", name, version)  # fmt: skip
        for gone in self._computed - wanted:
            log.info("view %s version %d is no longer computed", *gone)
            self.lifecycle.forget_live(*gone)
            self._live = {entry for entry in self._live if entry[0] != gone}
        self._computed = wanted
        for computed in sorted(wanted):
            for partition, first in first_offsets.items():
                if (computed, partition) not in self._live:
                    self._hand_over(computed, partition, first)
        return [self.declared[v] for v in sorted(wanted)]

    def forget(self, partitions: list[Partition]) -> None:
        """Partitions revoked: whoever gets them next checks their marks again."""
        self._live = {entry for entry in self._live if entry[1] not in partitions}

    def _hand_over(self, version: Version, partition: Partition, first: int) -> None:
        name, number = version
        marks = self.lifecycle.version_info(name, number)
        if partition not in marks["live"]:
            through = marks["through"].get(partition)
            if through is None:
                log.info("%s v%d: no backfill for %s:%d; computed from offset %d on",
                         name, number, *partition, first)  # fmt: skip
            elif self.offline_root is None:
                log.warning("%s v%d: no offline store to hand over from its backfill (through "
                            "%d) on %s:%d", name, number, through, *partition)  # fmt: skip
            else:
                applied = apply_gap(self.store, self.declared[version],
                                    offline_root=self.offline_root, event_time=self.event_time,
                                    partition=partition, after=through, before=first)  # fmt: skip
                log.info("%s v%d: handed over from its backfill on %s:%d (%d events between "
                         "offsets %d and %d)", name, number, *partition, applied, through,
                         first)  # fmt: skip
            self.lifecycle.record_offsets(name, number, "live", {partition: first})
        self._live.add((version, partition))

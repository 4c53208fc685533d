"""What can be served: views, their entities' join keys and feature services, resolved
once into read plans.

A `Catalog` is built from the consumer definitions (``consumers/*.toml``) when a client
or server starts; every lookup then resolves its feature list with a dictionary hit
(`Catalog.resolve` caches by the list), never by reading definitions again.

References: ``view:feature`` reads the view's served version, ``view@3:feature`` that
version explicitly (a version in shadow is only ever read this way); a plain name
without ``:`` is a feature service. The served version is the view's active version in
the lifecycle state (`featurestore.online.lifecycle`), which clients read in every
lookup's own round trip (`observe`); before any state, the highest declared one.
Output names are the feature names, or with full names ``view__feature`` (and
``view_v3__feature`` for a pinned version).

Invariants: a feature list resolves to the same `Resolved` every time; an unknown
view, version, feature or service is a `NotFoundError` naming it and what exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from featurestore.errors import ConfigError, DefinitionsOutOfDateError, NotFoundError
from featurestore.features.definitions import FeatureService, FeatureView, parse_ref


@dataclass(frozen=True)
class Output:
    """One requested feature: its reference, its output name and where it is read."""

    ref: str  # as the caller wrote it, or view:feature for a service's
    name: str  # the output column: the feature name, or view__feature when asked
    request: int  # index into Resolved.requests
    feature: str


@dataclass(frozen=True)
class Resolved:
    """A feature list as reads: one (view, features) request per view version."""

    requests: tuple[tuple[FeatureView, tuple[str, ...]], ...]
    outputs: tuple[Output, ...]
    join_keys: tuple[str, ...]  # every join key the lookup's entities must carry
    service: str | None = None
    served: tuple[tuple[str, int], ...] = ()  # views asked for by name: the version read

    @cached_property
    def keys(self) -> list[tuple[str, tuple[int, str]]]:
        """Each output's name and its (request, feature) key in a store `Lookup`."""
        return [(out.name, (out.request, out.feature)) for out in self.outputs]


class Catalog:
    """The views, entities and feature services a client or server serves."""

    def __init__(
        self,
        views: Iterable[FeatureView],
        join_keys: Mapping[str, Sequence[str]],
        services: Iterable[FeatureService] = (),
        *,
        prefix: str = "fs",
        redis_url: str | None = None,
    ) -> None:
        self.versions: dict[str, dict[int, FeatureView]] = {}
        for view in views:
            known = self.versions.setdefault(view.name, {})
            if view.version in known and known[view.version] != view:
                raise ConfigError(
                    f"view {view.name!r} version {view.version} is declared twice, "
                    "differently; give one of them a new version"
                )
            known[view.version] = view
        self.join_keys = {entity: list(keys) for entity, keys in join_keys.items()}
        self.services: dict[str, FeatureService] = {}
        for service in services:
            if service.name in self.services:
                raise ConfigError(f"feature service {service.name!r} is declared twice")
            self.services[service.name] = service
        self.prefix = prefix
        self.redis_url = redis_url
        self.active: dict[str, int] = {}  # as last read from the lifecycle state
        self._resolved: dict[tuple[tuple[str, ...] | str, bool], Resolved] = {}
        for service in self.services.values():  # a broken service fails at start
            try:
                self.resolve(service.name)
            except NotFoundError as exc:
                raise ConfigError(f"feature service {service.name!r}: {exc}") from None

    @classmethod
    def load(cls, where: str | Path) -> Catalog:
        """The catalog of the consumer definitions in a folder (or one file); the default
        ``consumers`` is the project's definitions when there is no such folder here
        (`featurestore.project.definitions_path`)."""
        from featurestore.project import definitions_path
        from featurestore.stream.definition import load_definitions

        where = definitions_path(where)
        consumers = load_definitions(where)
        prefixes = {c.sinks.online.prefix for c in consumers}
        urls = {c.sinks.online.redis_url for c in consumers} - {None}
        if len(prefixes) > 1 or len(urls) > 1:
            raise ConfigError(
                f"the definitions in {where} write to different online stores (prefixes "
                f"{sorted(prefixes)}, URLs {len(urls)}); serve each store with its own "
                "definitions folder"
            )
        join_keys: dict[str, list[str]] = {}
        for consumer in consumers:
            for entity, keys in consumer.join_keys.items():
                if join_keys.setdefault(entity, keys) != keys:
                    raise ConfigError(
                        f"entity {entity!r} has join keys {join_keys[entity]} in one definition "
                        f"and {keys} in another; an entity's keys must agree everywhere"
                    )
        return cls(
            [v for c in consumers for v in c.views],
            join_keys,
            [s for c in consumers for s in c.feature_services],
            prefix=prefixes.pop() if prefixes else "fs",
            redis_url=urls.pop() if urls else None,
        )

    @property
    def views(self) -> dict[str, FeatureView]:
        """The served version of every view, by name."""
        return {name: self.view(name) for name in self.versions}

    def served_version(self, name: str) -> int:
        """The active version (`observe`), or before any lifecycle state the highest
        declared one (what the consumer activates on its first start)."""
        return self.active.get(name) or max(self.versions[name])

    def observe(self, active: Mapping[str, int | None]) -> None:
        """The active versions read from the lifecycle state (a lookup reads them in its
        own round trip): resolutions made with other versions are dropped."""
        changed = False
        for name, version in active.items():
            if version is not None and self.active.get(name) != version:
                self.active[name] = version
                changed = True
        if changed:
            self._resolved.clear()

    def is_current(self, resolved: Resolved) -> bool:
        """Whether ``resolved`` read the versions served now."""
        return all(self.served_version(name) == version for name, version in resolved.served)

    def view(self, name: str, version: int | None = None) -> FeatureView:
        known = self.versions.get(name)
        if known is None:
            views = ", ".join(sorted(self.versions)) or "none"
            raise NotFoundError(f"unknown feature view {name!r}; views: {views}")
        if version is None:
            served = self.served_version(name)
            if served not in known:
                raise DefinitionsOutOfDateError(
                    f"feature view {name!r} serves version {served}, which the definitions "
                    f"loaded here do not declare (they have {sorted(known)}); deploy the "
                    "current definitions to this client or server"
                )
            return known[served]
        if version not in known:
            raise NotFoundError(
                f"feature view {name!r} has no version {version}; versions: "
                f"{', '.join(map(str, sorted(known)))}"
            )
        return known[version]

    def entity_keys(self, view: FeatureView) -> list[str]:
        return self.join_keys[view.entity]

    def resolve(self, features: Sequence[str] | str, *, full_names: bool = False) -> Resolved:
        """The reads of a feature list (``view:feature`` refs) or of a feature service."""
        key = (features if isinstance(features, str) else tuple(features), full_names)
        cached = self._resolved.get(key)
        if cached is None:
            cached = self._resolved[key] = self._resolve(*key)
        return cached

    def _resolve(self, features: tuple[str, ...] | str, full_names: bool) -> Resolved:
        service = None
        if isinstance(features, str):
            if features not in self.services:
                known = ", ".join(sorted(self.services)) or "none"
                raise NotFoundError(f"unknown feature service {features!r}; services: {known}")
            service = features
            features = tuple(self.services[service].features)
        if not features:
            raise ConfigError("no features asked for; give view:feature references")
        requests: dict[tuple[str, int], list[str]] = {}
        picked: dict[tuple[str, int], FeatureView] = {}
        outputs: list[tuple[str, str, tuple[str, int], str]] = []
        served: dict[str, int] = {}
        for ref in features:
            view, feature, pinned = self._parse(ref)
            if not pinned:
                served[view.name] = view.version
            if feature not in {f.name for f in view.features}:
                raise NotFoundError(
                    f"feature view {view.name!r} (version {view.version}) has no feature "
                    f"{feature!r}; it has {', '.join(f.name for f in view.features)}"
                )
            at = (view.name, view.version)
            picked[at] = view
            if feature not in requests.setdefault(at, []):
                requests[at].append(feature)
            label = f"{view.name}_v{view.version}" if pinned else view.name
            out_name = f"{label}__{feature}" if full_names else feature
            outputs.append((ref, out_name, at, feature))
        names = [output[1] for output in outputs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            hint = "" if full_names else "; ask for full feature names (view__feature)"
            raise ConfigError(f"features {twice} are asked for twice{hint}")
        order = list(requests)
        keys = {k: None for at in order for k in self.join_keys[picked[at].entity]}
        return Resolved(
            tuple((picked[at], tuple(requests[at])) for at in order),
            tuple(Output(ref, name, order.index(at), f) for ref, name, at, f in outputs),
            tuple(keys),
            service,
            tuple(sorted(served.items())),
        )

    def _parse(self, ref: str) -> tuple[FeatureView, str, bool]:
        """(view, feature, whether the ref names the version)."""
        try:
            name, version, feature = parse_ref(ref)
        except ConfigError as exc:
            raise NotFoundError(str(exc)) from None
        return self.view(name, version), feature, version is not None

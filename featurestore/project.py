"""A featurestore project: one file at the repository root, ``featurestore.toml``, and the
Feast-shaped entry point over it, `FeatureStore`.

The file names the project, where its consumer definitions live (views, entities,
feature services, contracts' subjects) and its settings: any field of
`featurestore.settings.Settings` (Kafka, the schema registry, Redis, the offline store),
with paths relative to the file's folder::

    name = "payments"
    definitions = "consumers"        # a folder of consumer definitions, or one file

    [settings]
    offline_path = "offline"         # a local folder, or s3://..., gs://...
    registry_url = "http://127.0.0.1:8081"
    redis_url = "redis://127.0.0.1:6379/0"

Environment variables (``FEATURESTORE_*``) override the file, and a setting neither
gives is taken from the local stack as before. The CLI finds the file from the working
directory up (or at ``$FEATURESTORE_PROJECT``), so ``featurestore run payments`` and
``featurestore serve`` need neither flags nor variables in a project.

``FeatureStore(repo_path=".")`` answers Feast's calls unchanged:
``get_online_features(features=..., entity_rows=..., full_feature_names=False)`` (a list
of ``view:feature`` references or a feature service's name; rows as a list of dicts or
columns) and ``get_historical_features(entity_df=..., features=...)``, whose event-time
fields come from the contracts in the registry and whose offline store is the
project's. `FeatureClient` and `offline.history.get_historical_features` stay the layer
underneath.

Invariants: a project file with a key or setting this version does not know is refused
naming the known ones (a typo never silently falls back to a default); the file is read
once per `Settings` and per `FeatureStore`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featurestore.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]
    import polars as pl
    import pyarrow as pa

    from featurestore.serving import Catalog, FeatureClient, OnlineFeatures
    from featurestore.settings import Settings

PROJECT_FILE = "featurestore.toml"
PROJECT_ENV = "FEATURESTORE_PROJECT"
_KEYS = {"name", "definitions", "settings"}
_PATH_SETTINGS = {"offline_path", "kafka_config", "cache_dir", "local_home"}
# The project `Settings` read while `settings_for` runs (else the one found from the cwd).
_CURRENT: ContextVar[Project | None] = ContextVar("featurestore_project", default=None)


@dataclass(frozen=True)
class Project:
    """A parsed ``featurestore.toml``: its folder, name, definitions and settings."""

    root: Path
    name: str
    definitions: Path
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def find(cls, start: Path | None = None) -> Project | None:
        """The project at ``$FEATURESTORE_PROJECT``, else the nearest ``featurestore.toml``
        from ``start`` (the working directory) up; None outside any project."""
        named = os.environ.get(PROJECT_ENV)
        if named:
            return cls.load(Path(named))
        here = (start or Path.cwd()).resolve()
        for folder in (here, *here.parents):
            if (folder / PROJECT_FILE).is_file():
                return cls.load(folder / PROJECT_FILE)
        return None

    @classmethod
    def load(cls, where: Path) -> Project:
        """The project file at ``where`` (the file, or the folder holding it)."""
        path = where / PROJECT_FILE if where.is_dir() else where
        if not path.is_file():
            raise ConfigError(
                f"no {PROJECT_FILE} at {where}: write one there (name, definitions and a "
                f"[settings] table; see the docstring of featurestore.project or "
                f"docs/guides/from-feast.md), or point {PROJECT_ENV} at it"
            )
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
        unknown = sorted(set(raw) - _KEYS)
        if unknown:
            raise ConfigError(
                f"{path}: unknown key(s) {unknown}; a project file has {sorted(_KEYS)}, and "
                "endpoints and paths go in its [settings] table"
            )
        root = path.parent.resolve()
        settings = raw.get("settings", {})
        if not isinstance(settings, dict):
            raise ConfigError(f"{path}: `settings` must be a table ([settings])")
        return cls(root, str(raw.get("name", root.name)),
                   root / str(raw.get("definitions", "consumers")),
                   _checked(path, root, settings))  # fmt: skip


def _checked(path: Path, root: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The [settings] table, every name a `Settings` field, paths made absolute."""
    from featurestore.settings import Settings

    known = set(Settings.model_fields)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) {unknown} in [settings]; known: {sorted(known)}"
        )
    out = dict(settings)
    for name in _PATH_SETTINGS & set(out):
        value = str(out[name])
        if "://" not in value:  # a local path: the project root's
            out[name] = str(root / value)
    return out


def current() -> Project | None:
    """The project `Settings` reads: the one `settings_for` names, else `Project.find`."""
    return _CURRENT.get() or Project.find()


@contextmanager
def _using(project: Project) -> Iterator[None]:
    token = _CURRENT.set(project)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def settings_for(project: Project) -> Settings:
    """`Settings` with ``project``'s values under the environment's."""
    from featurestore.settings import Settings

    with _using(project):
        return Settings()


def definitions_path(given: str | Path, default: str = "consumers") -> Path:
    """Where consumer definitions are: ``given``, unless it is the default folder and no
    such folder is here, in a project: then the project's ``definitions``."""
    path = Path(given)
    if str(given) == default and not path.exists():
        project = Project.find()
        if project is not None:
            return project.definitions
    return path


class FeatureStore:
    """Feast's ``FeatureStore`` over a featurestore project (`Project`)."""

    def __init__(self, repo_path: str | Path = ".", *, clock: Callable[[], int] | None = None):
        self.project = Project.load(Path(repo_path))
        self.settings = settings_for(self.project)
        self._clock = clock  # epoch ms of lookups; default the wall clock
        self._online: FeatureClient | None = None

    @cached_property
    def catalog(self) -> Catalog:
        from featurestore.serving import Catalog

        return Catalog.load(self.project.definitions)

    def get_online_features(
        self,
        features: Sequence[str] | str,
        entity_rows: Any,
        full_feature_names: bool = False,
    ) -> OnlineFeatures:
        """Feast's call: ``features`` (``view:feature`` references or a feature
        service's name) of each entity row (a list of dicts, or columns), now."""
        refs = features if isinstance(features, str) else list(features)
        return self._client().get_online_features(
            entity_rows, refs, full_feature_names=full_feature_names
        )

    def get_historical_features(
        self,
        entity_df: Any,
        features: Sequence[str] | str,
        full_feature_names: bool = False,
    ) -> RetrievalJob:
        """Feast's call: each feature as of each row's ``event_timestamp``, recomputed
        from the project's offline store (point-in-time correct, rows kept in order);
        computed when the job's ``to_df``/``to_polars``/``to_arrow`` is first called."""
        refs = self._refs(features)
        return RetrievalJob(lambda: self._history(entity_df, refs, full_feature_names))

    def _refs(self, features: Sequence[str] | str) -> list[str]:
        if isinstance(features, str):  # a feature service
            return [out.ref for out in self.catalog.resolve(features).outputs]
        return list(features)

    def _history(self, entity_df: Any, refs: list[str], full_names: bool) -> pl.DataFrame:
        from featurestore.contracts import parse_contract
        from featurestore.offline.history import get_historical_features

        catalog = self.catalog
        root = self.settings.offline_path
        if root is None:
            raise ConfigError(
                f"project {self.project.name!r} has no offline store: set offline_path in "
                f"the [settings] of {self.project.root / PROJECT_FILE}, or "
                "FEATURESTORE_OFFLINE_PATH"
            )
        pinned = {f"{n}@{v}": view for n, known in catalog.versions.items()
                  for v, view in known.items()}  # fmt: skip
        views = catalog.views | pinned
        registry = self._registry()
        event_time = {}
        for subject in sorted({v.source for v in views.values()}):
            contract = parse_contract(registry.version(subject, "latest")["schema"])
            event_time[subject] = contract.event_time or ""
        return get_historical_features(
            entity_df, refs, views=views, join_keys=catalog.join_keys, offline_root=root,
            event_time=event_time, full_feature_names=full_names,
        )  # fmt: skip

    def _registry(self) -> Any:
        from featurestore.contracts.registry.client import RegistryClient

        settings = self.settings
        if settings.registry_url is None:
            raise ConfigError(
                f"project {self.project.name!r} names no schema registry, whose contracts "
                f"give each source's event time: set registry_url in the [settings] of "
                f"{self.project.root / PROJECT_FILE}, or FEATURESTORE_REGISTRY_URL"
            )
        return RegistryClient(settings.registry_url, settings.registry_user_info,
                              settings.registry_token)  # fmt: skip

    def _client(self) -> FeatureClient:
        if self._online is None:
            from featurestore.online import RedisOnlineStore, connect
            from featurestore.serving import FeatureClient
            from featurestore.serving.client import redis_url_for, wall_clock

            catalog = self.catalog
            url = redis_url_for(catalog, self.settings.redis_url)
            store = RedisOnlineStore(connect(url), catalog.join_keys, catalog.prefix)
            self._online = FeatureClient(catalog, store, clock=self._clock or wall_clock)
        return self._online

    def close(self) -> None:
        if self._online is not None:
            self._online.close()
            self._online = None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class RetrievalJob:
    """A training set, computed once on first use, in Feast's and our forms."""

    compute: Callable[[], pl.DataFrame]

    @cached_property
    def _frame(self) -> pl.DataFrame:
        return self.compute()

    def to_polars(self) -> pl.DataFrame:
        return self._frame

    def to_df(self) -> pd.DataFrame:
        """pandas, as Feast's ``to_df``."""
        return self._frame.to_pandas()

    def to_arrow(self) -> pa.Table:
        return self._frame.to_arrow()

"""The HTTP feature server: `AsyncFeatureClient` lookups behind FastAPI.

Routes (OpenAPI at ``/docs`` and ``/openapi.json``)::

    POST /features                 a batch of entities x features (refs or a service)
    POST /get-online-features      the same in Feast's request and response shapes
    GET  /features/{view}/{key}    one entity's features of one view
    GET  /views                    the views and feature services served
    GET  /healthz                  the process is up
    GET  /readyz                   Redis answers PING (503 otherwise)
    GET  /metrics                  Prometheus: latency by route, errors, lookups
    /registry/...                  the schema registry API, when mounted (``--registry``)

Errors are ``{"error": message}`` with: 404 unknown view, version, feature or service
(named); 422 malformed body or wrong entity keys; 413 more entity rows than
``max_entities``; 401 a missing or wrong bearer token when one is set; 503 Redis
unreachable (with ``Retry-After``), and lookups resume when it is back.

Invariants: definitions are resolved once per feature list, never per request; the
health, readiness and metrics routes need no token; responses are orjson.
"""

from __future__ import annotations

import gc
import hmac
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from featurestore.errors import (
    ConfigError,
    DefinitionsOutOfDateError,
    NotFoundError,
    OnlineStoreUnavailableError,
)
from featurestore.features.small import warm
from featurestore.monitor.metrics import (
    HTTP_ERRORS,
    HTTP_REQUEST_SECONDS,
    LOOKUP_ENTITIES,
    LOOKUP_SECONDS,
)
from featurestore.serving.client import AsyncFeatureClient, entity_rows
from featurestore.serving.response import OnlineFeatures

Scalar = str | int | float | bool | None
OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/registry")
DEFAULT_MAX_ENTITIES = 1000


class OrjsonResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> OrjsonResponse:
    return OrjsonResponse({"error": message}, status, headers)


class FeaturesRequest(BaseModel):
    """A batch lookup: entity rows (Feast's column form ``{"card_id": ["c1", "c2"]}``,
    or a list of rows) and either feature references or a feature service."""

    model_config = ConfigDict(extra="forbid")
    entities: dict[str, list[Scalar]] | list[dict[str, Scalar]] = Field(
        description='Join key -> values, e.g. {"card_id": ["c1", "c2"]}; or rows.'
    )
    features: list[str] | None = Field(
        default=None, description="view:feature references (view@version:feature for a version)."
    )
    feature_service: str | None = Field(default=None, description="A feature service's name.")
    full_feature_names: bool = Field(
        default=False, description="Name values view__feature instead of feature."
    )

    @model_validator(mode="after")
    def _one_kind_of_features(self) -> FeaturesRequest:
        if (self.features is None) == (self.feature_service is None):
            raise ValueError("give exactly one of `features` and `feature_service`")
        if self.features is not None and not self.features:
            raise ValueError("`features` is empty")
        if isinstance(self.entities, dict):
            _same_lengths(self.entities)
        return self

    @property
    def rows(self) -> int:
        if isinstance(self.entities, dict):
            return len(next(iter(self.entities.values()), []))
        return len(self.entities)


def _same_lengths(columns: dict[str, list[Scalar]]) -> None:
    if len({len(v) for v in columns.values()}) > 1:
        raise ValueError("every join key needs as many values as the others")


class FeastRequest(BaseModel):
    """Feast's ``POST /get-online-features`` body: entity columns and either feature
    references or a feature service (Feast sends ``features: []`` with a service)."""

    model_config = ConfigDict(extra="forbid")
    entities: dict[str, list[Scalar]] = Field(
        description='Join key -> values, e.g. {"card_id": ["c1", "c2"]}.'
    )
    features: list[str] = Field(
        default_factory=list, description="view:feature references (view@version:feature)."
    )
    feature_service: str | None = Field(default=None, description="A feature service's name.")
    full_feature_names: bool = Field(
        default=False, description="Name values view__feature instead of feature."
    )
    include_feature_view_version_metadata: bool = Field(
        default=False, description="Name each view version read in metadata."
    )

    @model_validator(mode="after")
    def _one_kind_of_features(self) -> FeastRequest:
        if bool(self.features) == (self.feature_service is not None):
            raise ValueError("give exactly one of a non-empty `features` and `feature_service`")
        _same_lengths(self.entities)
        return self

    @property
    def rows(self) -> int:
        return len(next(iter(self.entities.values()), []))


@dataclass(frozen=True)
class ServerOptions:
    max_entities: int = DEFAULT_MAX_ENTITIES
    token: str | None = None
    name: str = "feature-server"


@dataclass(frozen=True)
class RegistryMount:
    """The schema registry API, served under ``/registry`` by the same process."""

    app: Any  # the registry's FastAPI app
    start: Callable[[], None]
    stop: Callable[[], None]


def create_app(
    connect: Callable[[], AsyncFeatureClient],
    options: ServerOptions = ServerOptions(),
    registry: RegistryMount | None = None,
) -> FastAPI:
    """The feature server; ``connect`` makes its client when the app starts (inside the
    worker's event loop)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.client = connect()
        # The lookup kernels compiled (or loaded from numba's cache) now, not by the
        # first request: the first compile after an install takes seconds.
        warm()
        if registry is not None:
            registry.start()
        # What start-up made (modules, the app, the catalog) is never garbage: frozen, a
        # full collection skips it. Unfrozen, one took ~50 ms with Polars, numpy and
        # pydantic loaded, once every few hundred 100-entity lookups (bench/peers).
        gc.freeze()
        try:
            yield
        finally:
            if registry is not None:
                registry.stop()
            await app.state.client.aclose()

    app = FastAPI(
        title="featurestore feature server",
        description="Online features by entity key, with version, freshness and status.",
        default_response_class=OrjsonResponse,
        lifespan=lifespan,
    )
    app.state.options = options
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(ConfigError, _invalid)
    app.add_exception_handler(OnlineStoreUnavailableError, _unavailable)
    app.add_exception_handler(DefinitionsOutOfDateError, _unavailable)
    app.add_exception_handler(RequestValidationError, _malformed)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    _routes(app)
    if registry is not None:
        app.mount("/registry", registry.app)
    if options.token:
        app.add_middleware(_BearerToken, token=options.token)
    app.add_middleware(_Observe, server=options.name)  # outermost: sees every answer
    return app


def worker_environment(workers: int) -> dict[str, str]:
    """Environment for ``workers`` server processes on this machine: Polars' thread pool
    split between them (a lookup's queries are small; threads of several workers on the
    same cores only wait on each other), unless POLARS_MAX_THREADS is set."""
    if "POLARS_MAX_THREADS" in os.environ:
        return {}
    return {"POLARS_MAX_THREADS": str(max(1, (os.cpu_count() or 1) // workers))}


def app_from_environment() -> FastAPI:
    """The app uvicorn's workers build (``featurestore serve`` sets the environment):
    definitions from ``FEATURESTORE_SERVE_DEFINITIONS``, Redis, token and limits from
    the settings, the registry mounted when ``FEATURESTORE_SERVE_REGISTRY`` is 1."""
    from featurestore.serving.catalog import Catalog
    from featurestore.settings import Settings

    settings = Settings()
    catalog = Catalog.load(os.environ.get("FEATURESTORE_SERVE_DEFINITIONS", "consumers"))

    def connect() -> AsyncFeatureClient:
        from featurestore.online.connection import connect_async
        from featurestore.serving.client import redis_url_for, timeouts

        return AsyncFeatureClient(
            catalog, connect_async(redis_url_for(catalog, None), **timeouts())
        )

    options = ServerOptions(settings.server_max_entities, settings.server_token)
    registry = None
    if os.environ.get("FEATURESTORE_SERVE_REGISTRY") == "1":
        registry = mounted_registry(settings)
    return create_app(connect, options, registry)


def mounted_registry(settings: Any) -> RegistryMount:
    """The schema registry over the settings' Kafka, to mount under ``/registry``."""
    from featurestore.contracts.registry import RegistryAuth, RegistryState, SchemaLog
    from featurestore.contracts.registry.app import create_app as registry_app

    if settings.kafka_bootstrap is None:
        raise ConfigError(
            "the mounted registry keeps its schemas in Kafka: set FEATURESTORE_KAFKA_BOOTSTRAP"
            " (or bootstrap.servers in the file FEATURESTORE_KAFKA_CONFIG names)"
        )
    state = RegistryState()
    log = SchemaLog(
        state, settings.kafka_bootstrap, settings.registry_topic, settings.kafka_client_config()
    )
    auth = RegistryAuth(
        settings.registry_token, settings.registry_user_info, settings.registry_protect_reads
    )
    return RegistryMount(registry_app(state, log, auth), log.start, log.close)


def _client(request: Request) -> AsyncFeatureClient:
    client: AsyncFeatureClient = request.app.state.client
    return client


def _routes(app: FastAPI) -> None:
    options: ServerOptions = app.state.options

    async def batch(
        request: Request, body: FeaturesRequest | FeastRequest, wanted: str | list[str]
    ) -> OnlineFeatures | OrjsonResponse:
        """The lookup of a batch route's body; 413 above ``max_entities`` rows."""
        if body.rows > options.max_entities:
            return _error(
                413, f"{body.rows} entity rows in one request; the maximum is "
                f"{options.max_entities}: split the batch",
            )  # fmt: skip
        client = _client(request)
        resolved = client.catalog.resolve(wanted, full_names=body.full_feature_names)
        entities = entity_rows(body.entities, resolved.join_keys)
        lookup = client.lookup(wanted, entities, full_feature_names=body.full_feature_names)
        found: OnlineFeatures = await _timed(lookup, body.rows)
        return found

    @app.post("/features", summary="Features of a batch of entities")
    async def features(request: Request, body: FeaturesRequest) -> Any:
        wanted = body.feature_service if body.features is None else body.features
        assert wanted is not None
        found = await batch(request, body, wanted)
        return found if isinstance(found, OrjsonResponse) else found.body()

    @app.post(
        "/get-online-features",
        summary="Features of a batch of entities, in Feast's request and response shapes",
    )
    async def get_online_features(request: Request, body: FeastRequest) -> Any:
        wanted = body.feature_service if body.feature_service is not None else body.features
        found = await batch(request, body, wanted)
        if isinstance(found, OrjsonResponse):
            return found
        return found.feast_body(versions=body.include_feature_view_version_metadata)

    @app.get("/features/{view}/{key}", summary="One entity's features of one view")
    async def entity_features(
        request: Request,
        view: str,
        key: str,
        features: Annotated[
            str | None, Query(description="Comma-separated feature names; default all.")
        ] = None,
        version: Annotated[int | None, Query(description="A version; default served.")] = None,
    ) -> Any:
        client = _client(request)
        chosen = client.catalog.view(view, version)
        names = [f.strip() for f in features.split(",") if f.strip()] if features else None
        pin = f"@{version}" if version is not None else ""
        refs = [f"{chosen.name}{pin}:{n}" for n in names or [f.name for f in chosen.features]]
        client.catalog.resolve(refs)  # unknown features: 404 before any lookup
        keys = client.catalog.entity_keys(chosen)
        parts = key.split(",") if len(keys) > 1 else [key]
        if len(parts) != len(keys):
            raise ConfigError(
                f"view {view!r} is keyed by {keys}: give the key as "
                f"{','.join('<' + k + '>' for k in keys)}"
            )
        entities = entity_rows({k: [v] for k, v in zip(keys, parts, strict=True)}, keys)
        found = await _timed(client.lookup(refs, entities), 1)
        state = found.views[0]
        return {
            "view": chosen.name,
            "version": state.version,
            "entity": {k: v for k, v in zip(keys, parts, strict=True)},
            "status": state.status[0],
            "freshness_seconds": state.freshness_s[0],
            "at": found.body()["at"],
            "features": {name: column[0] for name, column in found.columns.items()},
        }

    @app.get("/views", summary="The feature views and feature services served")
    async def views(request: Request) -> Any:
        client = _client(request)
        catalog, states = client.catalog, await client.view_states()
        catalog.observe({name: state.active for name, state in states.items()})
        listed = []
        for name, known in sorted(catalog.versions.items()):
            served = catalog.view(name)
            state = states.get(name)
            listed.append(
                {
                    "name": name,
                    "version": served.version,
                    "versions": sorted(known),
                    "roles": {
                        str(v): state.role(v) if state else "declared" for v in sorted(known)
                    },
                    "entity": served.entity,
                    "join_keys": catalog.entity_keys(served),
                    "source": served.source,
                    "owner": served.owner,
                    "description": served.description,
                    "tags": served.tags,
                    "ttl_seconds": served.ttl_ms / 1000,
                    "features": [f.name for f in served.features],
                }
            )
        services = [s.model_dump() for s in catalog.services.values()]
        return {"views": listed, "feature_services": services}

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> Any:
        return {"status": "ok"}

    @app.get("/readyz", summary="Redis answers: lookups can be served")
    async def readyz(request: Request) -> Any:
        if await _client(request).ping():
            return {"status": "ready"}
        return _error(503, "the online store (Redis) does not answer", {"Retry-After": "1"})

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(_exposition(), media_type=CONTENT_TYPE_LATEST)


async def _timed(lookup: Awaitable[Any], rows: int) -> Any:
    started = time.perf_counter()
    result = await lookup
    LOOKUP_SECONDS.labels("server").observe(time.perf_counter() - started)
    LOOKUP_ENTITIES.labels("server").observe(rows)
    return result


def _exposition() -> bytes:
    """Metrics of this process, or of every worker when uvicorn runs several
    (prometheus-client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


async def _not_found(_request: Request, exc: Exception) -> Response:
    return _error(404, str(exc))


async def _invalid(_request: Request, exc: Exception) -> Response:
    return _error(422, str(exc))


async def _unavailable(_request: Request, exc: Exception) -> Response:
    return _error(503, str(exc), {"Retry-After": "1"})


async def _malformed(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
    )
    return _error(422, f"malformed request: {problems}")


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return _error(exc.status_code, f"HTTP {exc.status_code}: {exc.detail}")


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class _Observe:
    """Latency by route template and errors by status, as plain ASGI (a Starlette
    ``BaseHTTPMiddleware`` would cost more than a lookup's HTTP floor)."""

    def __init__(self, app: App, server: str) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def observe(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is None:
                route = "/registry" if scope["path"].startswith("/registry") else "unmatched"
            method = scope["method"]
            HTTP_REQUEST_SECONDS.labels(self.server, method, route).observe(
                time.perf_counter() - started
            )
            if status >= 400:
                HTTP_ERRORS.labels(self.server, method, route, str(status)).inc()


class _BearerToken:
    """Every route but health, readiness, metrics, docs and the registry (which has its
    own credentials) needs ``Authorization: Bearer <token>``."""

    def __init__(self, app: App, token: str) -> None:
        self.app, self.token = app, token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(OPEN_PATHS):
            given = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, credentials = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(
                credentials.strip(), self.token
            ):
                response = _error(
                    401, "this feature server needs a token: send Authorization: Bearer <token>",
                    {"WWW-Authenticate": 'Bearer realm="featurestore"'},
                )  # fmt: skip
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

"""The registry's HTTP API: the Confluent Schema Registry REST subset that the stock
``confluent_kafka.schema_registry`` client, ``AvroSerializer`` and ``AvroDeserializer``
use, with Confluent's content type, status codes and ``{"error_code", "message"}``
bodies, so those clients work unmodified.

Reads are answered from memory (``RegistryState``); writes go through ``SchemaLog``,
which returns only once the write is durable in Kafka and applied. With a token or a
``user:password`` configured, writes need it (HTTP bearer or basic); reads too when
``protect_reads`` is set.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from featurestore.contracts.registry.log import SchemaLog
from featurestore.contracts.registry.state import (
    Outcome,
    RegistryState,
    parse_version,
    schema_guid,
)
from featurestore.errors import RegistryError

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryResponse(JSONResponse):
    media_type = MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error(status: int, code: int, message: str) -> RegistryResponse:
    headers = {"WWW-Authenticate": 'Basic realm="featurestore", Bearer'} if status == 401 else None
    return RegistryResponse({"error_code": code, "message": message}, status, headers)


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials the registry accepts; with none set, everything is open."""

    token: str | None = None
    user_info: str | None = None  # "user:password", as the stock client's basic.auth.user.info
    protect_reads: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.token or self.user_info)

    def allows(self, authorization: str | None) -> bool:
        scheme, _, credentials = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and self.token:
            return hmac.compare_digest(credentials.strip().encode(), self.token.encode())
        if scheme.lower() == "basic" and self.user_info:
            try:
                given = base64.b64decode(credentials.strip(), validate=True)
            except ValueError:
                return False
            return hmac.compare_digest(given, self.user_info.encode())
        return False


class SchemaBody(BaseModel):
    """A schema as clients send it; Confluent's data-contract extras are accepted and ignored."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    schema_: str = Field(alias="schema", description="The Avro schema, as a JSON string.")
    schemaType: str | None = Field(default=None, description="Only AVRO is served.")
    references: list[dict[str, Any]] | None = None


class ConfigBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    compatibility: str | None = Field(default=None, description="e.g. BACKWARD, FULL_TRANSITIVE")
    compatibilityLevel: str | None = None

    @property
    def level(self) -> str | None:
        return self.compatibility or self.compatibilityLevel


def _registry(request: Request) -> RegistryState:
    state: RegistryState = request.app.state.registry
    return state


def _append(request: Request) -> Callable[[Callable[[], Outcome]], Any]:
    log: SchemaLog | None = request.app.state.log

    def append(command: Callable[[], Outcome]) -> Any:
        if log is None:
            raise RegistryError(500, 50001, "Error in the backend data store: read-only.")
        return log.append(command)

    return append


_WRITE_POST = re.compile(r"^/subjects/[^/]+/versions/?$")


def is_write(method: str, path: str) -> bool:
    """Registrations, config changes and deletes write; lookups and compatibility checks
    are POSTs that only read."""
    return method in ("PUT", "DELETE", "PATCH") or (
        method == "POST" and _WRITE_POST.match(path) is not None
    )


async def _authenticate(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Credentials first, before a body is even parsed."""
    auth: RegistryAuth = request.app.state.auth
    write = is_write(request.method, request.url.path)
    guarded = auth.enabled and (write or auth.protect_reads)
    if guarded and not auth.allows(request.headers.get("authorization")):
        kind = "writes" if write else "reads"
        return _error(
            401, 40101, f"Unauthorized: {kind} to this registry need credentials; send "
            "HTTP basic (basic.auth.user.info in the stock client) or a bearer token.",
        )  # fmt: skip
    return await call_next(request)


State = Annotated[RegistryState, Depends(_registry)]
Append = Annotated[Callable[[Callable[[], Outcome]], Any], Depends(_append)]
Deleted = Annotated[bool, Query(description="Include soft-deleted entries.")]
Permanent = Annotated[bool, Query(description="Hard delete (after a soft delete).")]
Verbose = Annotated[bool, Query(description="Give the reasons when incompatible.")]

reads = APIRouter()
writes = APIRouter()


@reads.get("/")
def root() -> dict[str, Any]:
    return {}


@reads.get("/schemas/types")
def schema_types() -> list[str]:
    return ["AVRO"]


@reads.get("/schemas/ids/{schema_id}")
def schema_by_id(state: State, schema_id: int, subject: str | None = None) -> dict[str, Any]:
    text = state.schema_by_id(schema_id, subject)
    return {"schema": text, "guid": schema_guid(text)}


@reads.get("/schemas/ids/{schema_id}/schema")
def raw_schema_by_id(state: State, schema_id: int, subject: str | None = None) -> Any:
    return orjson.loads(state.schema_by_id(schema_id, subject))


@reads.get("/schemas/ids/{schema_id}/subjects")
def subjects_by_id(state: State, schema_id: int, deleted: Deleted = False) -> list[str]:
    return sorted({e.subject for e in state.id_users(schema_id, deleted)})


@reads.get("/schemas/ids/{schema_id}/versions")
def versions_by_id(state: State, schema_id: int, deleted: Deleted = False) -> list[dict[str, Any]]:
    return [
        {"subject": e.subject, "version": e.version} for e in state.id_users(schema_id, deleted)
    ]


@reads.get("/schemas/guids/{guid}")
def schema_by_guid(state: State, guid: str) -> dict[str, Any]:
    schema_id, text = state.schema_by_guid(guid)
    return {"schema": text, "id": schema_id, "guid": guid}


@reads.get("/subjects")
def subjects(state: State, deleted: Deleted = False) -> list[str]:
    return state.subjects(deleted)


@reads.post("/subjects/{subject}")
def lookup(
    state: State, subject: str, body: SchemaBody, deleted: Deleted = False
) -> dict[str, Any]:
    return state.lookup(subject, body.schema_, deleted).as_response()


@writes.delete("/subjects/{subject}")
def delete_subject(
    state: State, append: Append, subject: str, permanent: Permanent = False
) -> list[int]:
    result: list[int] = append(lambda: state.delete_subject(subject, permanent))
    return result


@reads.get("/subjects/{subject}/versions")
def versions(state: State, subject: str, deleted: Deleted = False) -> list[int]:
    return state.versions(subject, deleted)


@writes.post("/subjects/{subject}/versions")
def register(
    state: State, append: Append, subject: str, body: SchemaBody, normalize: bool = False
) -> dict[str, Any]:
    """Register a schema (idempotent). Schemas are always stored in canonical form, so
    ``normalize`` changes nothing."""
    result: dict[str, Any] = append(
        lambda: state.register(subject, body.schema_, body.schemaType, body.references)
    )
    return result


@reads.get("/subjects/{subject}/versions/{version}")
def version(state: State, subject: str, version: str, deleted: Deleted = False) -> dict[str, Any]:
    return state.version(subject, version, deleted).as_response()


@reads.get("/subjects/{subject}/versions/{version}/schema")
def raw_version(state: State, subject: str, version: str, deleted: Deleted = False) -> Any:
    return orjson.loads(state.version(subject, version, deleted).schema)


@reads.get("/subjects/{subject}/versions/{version}/referencedby")
def referenced_by(state: State, subject: str, version: str) -> list[int]:
    state.version(subject, version)
    return []  # schema references are not supported, so nothing refers to anything


@writes.delete("/subjects/{subject}/versions/{version}")
def delete_version(
    state: State, append: Append, subject: str, version: str, permanent: Permanent = False
) -> int:
    parse_version(version)
    result: int = append(lambda: state.delete_version(subject, version, permanent))
    return result


def _compatibility(
    state: RegistryState, subject: str, version: str | None, body: SchemaBody, verbose: bool
) -> dict[str, Any]:
    reasons = state.test_compatibility(subject, version, body.schema_)
    answer: dict[str, Any] = {"is_compatible": not reasons}
    if verbose:
        answer["messages"] = reasons
    return answer


@reads.post("/compatibility/subjects/{subject}/versions/{version}")
def compatibility_with_version(
    state: State, subject: str, version: str, body: SchemaBody, verbose: Verbose = False
) -> dict[str, Any]:
    return _compatibility(state, subject, version, body, verbose)


@reads.post("/compatibility/subjects/{subject}/versions")
def compatibility_with_all(
    state: State, subject: str, body: SchemaBody, verbose: Verbose = False
) -> dict[str, Any]:
    return _compatibility(state, subject, None, body, verbose)


@reads.get("/config")
def global_config(state: State) -> dict[str, Any]:
    return {"compatibilityLevel": state.config(None).value}


@writes.put("/config")
def set_global_config(state: State, append: Append, body: ConfigBody) -> dict[str, Any]:
    result: dict[str, Any] = append(lambda: state.set_config(None, body.level))
    return result


@writes.delete("/config")
def delete_global_config(state: State, append: Append) -> dict[str, Any]:
    result: dict[str, Any] = append(lambda: state.delete_config(None))
    return result


@reads.get("/config/{subject}")
def subject_config(state: State, subject: str, defaultToGlobal: bool = False) -> dict[str, Any]:
    return {"compatibilityLevel": state.config(subject, defaultToGlobal).value}


@writes.put("/config/{subject}")
def set_subject_config(
    state: State, append: Append, subject: str, body: ConfigBody
) -> dict[str, Any]:
    result: dict[str, Any] = append(lambda: state.set_config(subject, body.level))
    return result


@writes.delete("/config/{subject}")
def delete_subject_config(state: State, append: Append, subject: str) -> dict[str, Any]:
    result: dict[str, Any] = append(lambda: state.delete_config(subject))
    return result


@reads.get("/mode")
def mode() -> dict[str, str]:
    return {"mode": "READWRITE"}


@reads.get("/mode/{subject}")
def subject_mode(subject: str) -> dict[str, str]:
    return {"mode": "READWRITE"}


class ModeBody(BaseModel):
    mode: str


def _set_mode(body: ModeBody) -> dict[str, str]:
    if body.mode.upper() != "READWRITE":
        raise RegistryError(
            422, 42204, f"Invalid mode {body.mode!r}: this registry is always READWRITE."
        )
    return {"mode": "READWRITE"}


@writes.put("/mode")
def set_mode(body: ModeBody, force: bool = False) -> dict[str, str]:
    return _set_mode(body)


@writes.put("/mode/{subject}")
def set_subject_mode(subject: str, body: ModeBody, force: bool = False) -> dict[str, str]:
    return _set_mode(body)


@reads.get("/contexts")
def contexts() -> list[str]:
    return ["."]


async def _registry_error(_request: Request, exc: Exception) -> RegistryResponse:
    assert isinstance(exc, RegistryError)
    return _error(exc.status, exc.code, str(exc))


async def _http_error(_request: Request, exc: Exception) -> RegistryResponse:
    """The framework's own answers (unknown path, wrong method, unreadable body) in the
    registry's error format, so clients always find an error_code."""
    assert isinstance(exc, StarletteHTTPException)
    return _error(exc.status_code, exc.status_code, f"HTTP {exc.status_code}: {exc.detail}")


async def _invalid_request(_request: Request, exc: Exception) -> RegistryResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return _error(422, 422, f"Unprocessable entity: {problems}")


def create_app(state: RegistryState, log: SchemaLog | None, auth: RegistryAuth) -> FastAPI:
    """The registry app over ``state``; ``log`` (started and closed with the app) makes
    writes durable. Without a log the app is read-only and writes answer 50001."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if log is not None:
            log.start()
        try:
            yield
        finally:
            if log is not None:
                log.close()

    app = FastAPI(
        title="featurestore schema registry",
        description="Confluent Schema Registry compatible API with data-quality contracts.",
        default_response_class=RegistryResponse,
        lifespan=lifespan,
    )
    app.state.registry = state
    app.state.log = log
    app.state.auth = auth
    app.add_exception_handler(RegistryError, _registry_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.middleware("http")(_authenticate)
    app.include_router(reads)
    app.include_router(writes)
    return app

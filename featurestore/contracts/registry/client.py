"""A small client for the registry's REST API, used by the CLI and the consumers.

The stock ``confluent_kafka.schema_registry`` client is what producers use and what the
tests prove compatibility with; this one exists because the CLI needs what the stock
client drops: the reasons of a failed compatibility check (``verbose=true``).

Credentials (token, user info, or user info in the URL) go in headers only: no message
and no log line names them.
"""

from __future__ import annotations

from typing import Any

import httpx

from featurestore.errors import RegistryError, RegistryUnavailableError, UnknownSchemaError

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryClient:
    def __init__(
        self,
        url: str,
        user_info: str | None = None,
        token: str | None = None,
        timeout: float = 15.0,
    ) -> None:
        # Credentials in the URL (http://user:password@host, as the stock client's
        # basic.auth.credentials.source=URL) become basic auth and leave the URL, which
        # messages and httpx's request log show.
        parsed = httpx.URL(url.rstrip("/"))
        self.url = str(parsed.copy_with(username=None, password=None))
        if parsed.userinfo and not user_info:
            user_info = f"{parsed.username}:{parsed.password}"
        headers = {"Accept": MEDIA_TYPE, "Content-Type": MEDIA_TYPE}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        auth = None
        if user_info and not token:
            user, _, password = user_info.partition(":")
            auth = httpx.BasicAuth(user, password)
        self._http = httpx.Client(base_url=self.url, headers=headers, auth=auth, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        try:
            response = self._http.request(method, path, json=body, params=params or None)
        except httpx.HTTPError as exc:
            raise RegistryUnavailableError(
                f"the schema registry at {self.url} did not answer ({exc}). Start one with "
                "`featurestore local up` or `featurestore registry serve`, or set "
                "FEATURESTORE_REGISTRY_URL."
            ) from exc
        if response.is_success:
            return response.json() if response.content else None
        try:
            error = response.json()
            code, message = int(error["error_code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            code, message = response.status_code, response.text[:500]
        raise RegistryError(response.status_code, code, message)

    def register(self, subject: str, schema: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", f"/subjects/{subject}/versions", {"schema": schema, "schemaType": "AVRO"}
        )
        return result

    def check(self, subject: str, schema: str) -> list[str]:
        """Reasons ``schema`` may not be registered under ``subject`` (empty: it may)."""
        answer = self._call(
            "POST",
            f"/compatibility/subjects/{subject}/versions",
            {"schema": schema, "schemaType": "AVRO"},
            verbose="true",
        )
        return [] if answer["is_compatible"] else list(answer.get("messages") or ["incompatible"])

    def schema(self, ref: int | str) -> str:
        """A writer schema by id (int) or GUID (str), from any Confluent-compatible
        registry. UnknownSchemaError when the registry has none; RegistryUnavailableError
        when it cannot be reached (callers retry that one)."""
        path = f"/schemas/ids/{ref}" if isinstance(ref, int) else f"/schemas/guids/{ref}"
        try:
            answer = self._call("GET", path)
        except RegistryError as exc:
            if exc.code in (40403, 40401) or exc.status == 404:
                raise UnknownSchemaError(f"the registry has no schema {ref}") from exc
            if exc.status >= 500:
                raise RegistryUnavailableError(f"the registry failed: {exc}") from exc
            raise
        return str(answer["schema"])

    def subjects(self) -> list[str]:
        result: list[str] = self._call("GET", "/subjects")
        return result

    def version(self, subject: str, version: str | int = "latest") -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/subjects/{subject}/versions/{version}")
        return result

    def versions(self, subject: str) -> list[int]:
        result: list[int] = self._call("GET", f"/subjects/{subject}/versions")
        return result

    def compatibility_level(self, subject: str) -> str:
        answer = self._call("GET", f"/config/{subject}", defaultToGlobal="true")
        return str(answer["compatibilityLevel"])

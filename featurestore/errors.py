"""The one error hierarchy of featurestore.

Every error's message says what went wrong and what to do next, so the CLI can print
it as it is and exit non-zero without a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class FeatureStoreError(Exception):
    """Base of every error featurestore raises on purpose."""


class ConfigError(FeatureStoreError):
    """A setting is missing, malformed or contradicts another."""


class NotFoundError(ConfigError):
    """A feature view, version, feature or feature service that is not defined."""


class DefinitionsOutOfDateError(FeatureStoreError):
    """The online store serves a view version that this process's definitions lack."""


class OnlineStoreUnavailableError(FeatureStoreError):
    """The online store (Redis) could not be reached or answered with an error."""


class OnlineMergeError(FeatureStoreError):
    """An entity's hash holds a record the apply cannot merge, or other writers kept
    changing its hashes under it."""


class MissingToolError(FeatureStoreError):
    """A program the local services need (java, mvn, redis-server) is not installed."""

    def __init__(self, tool: str, why: str, install: str) -> None:
        self.tool = tool
        super().__init__(f"{tool} was not found on PATH; it is needed to {why}. {install}")


class MissingExtraError(FeatureStoreError):
    """An optional part of featurestore is used without the packages of its extra."""


def import_extra(module: str, extra: str, why: str) -> ModuleType:
    """``module``, or a MissingExtraError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{why} needs {exc.name or module}, which is not installed; install "
            f"featurestore's '{extra}' extra: pip install 'featurestore[{extra}]'"
        ) from None


class LocalServiceError(FeatureStoreError):
    """A local service (Kafka, Redis) could not be set up, started, or reached."""


class ContractError(FeatureStoreError):
    """A schema or its contract metadata (entity, event time, constraints) is invalid.

    `field` names the top-level field at fault, or is None when the problem is the
    schema as a whole or its record-level `featurestore` block.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class RegistryError(FeatureStoreError):
    """A schema registry request failed, with Confluent's HTTP status and error code.

    The codes follow the Confluent Schema Registry so stock clients understand them:
    40401 subject not found, 40402 version not found, 40403 schema not found, 40404/40406
    subject/version soft-deleted, 40405/40407 not soft-deleted before a permanent delete,
    40408 no subject-level config, 409 incompatible schema, 42201 invalid schema, 42202
    invalid version, 42203 invalid compatibility level, 50001 backend store error.
    """

    def __init__(self, status: int, code: int, message: str) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class RegistryUnavailableError(FeatureStoreError):
    """The schema registry could not be reached."""


class UnknownSchemaError(FeatureStoreError, LookupError):
    """The registry has no schema under this id or GUID."""

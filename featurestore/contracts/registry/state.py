"""The registry's state: subjects, versions, ids and compatibility configs, as rebuilt
from the log of records kept in a compacted Kafka topic (``log.py``).

Invariants:
- State changes only through ``apply(key, value)`` of log records, in log order: the
  same log gives the same state, so every instance reading the topic agrees.
- Commands (``register``, ``delete_version``, ``set_config`` ...) never change the state:
  they validate against it and return the records to append. The caller appends them
  under the single-writer protocol of ``log.py`` and the state changes when they are
  read back.
- The same schema (canonical JSON: formatting and attribute order aside) gets the same id
  under every subject; the text served is the first one registered, compacted. An id names one
  schema text forever: the highest id ever allocated is itself a record, so a permanent
  delete followed by compaction can never hand an old id to a new schema.
- Records use the Confluent ``_schemas`` topic's key and value shapes.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from featurestore.contracts.compatibility import CompatibilityLevel, check_compatibility
from featurestore.contracts.contract import parse_contract
from featurestore.errors import ContractError, RegistryError

DEFAULT_LEVEL = CompatibilityLevel.BACKWARD
_GUID_NAMESPACE = uuid.UUID("6d1f5b0e-2f53-4d5a-9a3c-7f0e4c1b9a10")
MAX_VERSION = 2**31 - 1

Key = dict[str, Any]
Value = dict[str, Any] | None
Record = tuple[Key, Value]


def encode(part: Key | Value) -> bytes | None:
    """Keys and values as stored in Kafka: compact JSON, keys sorted so equal keys compact."""
    return None if part is None else orjson.dumps(part, option=orjson.OPT_SORT_KEYS)


def _parse_json(schema: str) -> Any:
    try:
        return orjson.loads(schema)
    except orjson.JSONDecodeError as exc:
        raise RegistryError(422, 42201, f"Invalid schema: not valid JSON ({exc}).") from exc


def _dump(parsed: Any, option: int | None = None) -> str:
    try:
        return orjson.dumps(parsed, option=option).decode()
    except TypeError as exc:  # orjson's nesting limit (254 levels)
        raise RegistryError(
            422, 42201, f"Invalid schema: nested too deeply ({exc}); flatten the schema."
        ) from exc


def compact_schema(schema: str) -> str:
    """The text stored and served: the producer's JSON without whitespace, order kept."""
    return _dump(_parse_json(schema))


def canonical_schema(schema: str) -> str:
    """The schema's identity: compact JSON with sorted attributes. Two texts that differ
    only in formatting or attribute order are one schema with one id (field order is a
    list, so it is kept and matters)."""
    return _dump(_parse_json(schema), orjson.OPT_SORT_KEYS)


def schema_guid(schema: str) -> str:
    """A stable GUID per schema, the same on every instance (for header schema ids)."""
    return str(uuid.uuid5(_GUID_NAMESPACE, canonical_schema(schema)))


@dataclass(frozen=True)
class SchemaVersion:
    subject: str
    version: int
    id: int
    schema: str
    deleted: bool

    def as_response(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "version": self.version,
            "id": self.id,
            "guid": schema_guid(self.schema),
            "schema": self.schema,
        }


@dataclass(frozen=True)
class Outcome:
    """A command's answer, and the records that make it true once appended."""

    response: Any
    records: list[Record]


def _schema_key(subject: str, version: int) -> Key:
    return {"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1}


def _config_key(subject: str | None) -> Key:
    return {"keytype": "CONFIG", "subject": subject, "magic": 0}


_ID_KEY: Key = {"keytype": "ID", "magic": 0}


def _schema_value(v: SchemaVersion) -> Value:
    return {
        "subject": v.subject,
        "version": v.version,
        "id": v.id,
        "schema": v.schema,
        "schemaType": "AVRO",
        "deleted": v.deleted,
    }


def parse_level(level: object) -> CompatibilityLevel:
    try:
        if not isinstance(level, str):
            raise ValueError(level)
        return CompatibilityLevel(level.upper())
    except ValueError:
        raise RegistryError(
            422,
            42203,
            f"Invalid compatibility level {level!r}. Valid values are none, backward, forward, "
            "full, backward_transitive, forward_transitive, and full_transitive.",
        ) from None


class RegistryState:
    """Everything a registry instance knows, guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._subjects: dict[str, dict[int, SchemaVersion]] = {}
        self._ids: dict[int, str] = {}  # id -> schema text, while any version uses it
        self._users: dict[int, set[tuple[str, int]]] = {}  # id -> (subject, version)
        self._id_of: dict[str, int] = {}  # canonical schema -> id
        self._guids: dict[str, int] = {}  # schema guid -> id
        self._configs: dict[str | None, CompatibilityLevel] = {}
        self._max_id = 0

    # --- applying the log ---------------------------------------------------------

    def apply(self, key: Key, value: Value) -> None:
        """Apply one log record; unknown key types are skipped (forward compatibility).

        A malformed record raises before anything changes (RegistryError, KeyError,
        TypeError or ValueError), so the state never holds half of one.
        """
        with self.lock:
            keytype = key.get("keytype")
            if keytype == "SCHEMA":
                self._apply_schema(str(key["subject"]), int(key["version"]), value)
            elif keytype == "CONFIG":
                subject = key.get("subject")
                if value is None:
                    self._configs.pop(subject, None)
                else:
                    self._configs[subject] = parse_level(value["compatibilityLevel"])
            elif keytype == "ID" and value is not None:
                self._max_id = max(self._max_id, int(value["max_id"]))

    def _apply_schema(self, subject: str, version: int, value: Value) -> None:
        entry = canonical = None
        if value is not None:
            entry = SchemaVersion(
                subject, version, int(value["id"]), str(value["schema"]), bool(value["deleted"])
            )
            canonical = canonical_schema(entry.schema)
        versions = self._subjects.setdefault(subject, {})
        old = versions.pop(version, None)
        if old is not None:
            self._release(old)
        if entry is not None and canonical is not None:
            versions[version] = entry
            if entry.id not in self._ids:
                self._ids[entry.id] = entry.schema
                self._id_of[canonical] = entry.id
                self._guids[schema_guid(entry.schema)] = entry.id
            self._users.setdefault(entry.id, set()).add((subject, version))
            self._max_id = max(self._max_id, entry.id)
        if not versions:
            del self._subjects[subject]

    def _release(self, old: SchemaVersion) -> None:
        users = self._users.get(old.id, set())
        users.discard((old.subject, old.version))
        if not users:
            self._users.pop(old.id, None)
            text = self._ids.pop(old.id, None)
            if text is not None:
                self._id_of.pop(canonical_schema(text), None)
                self._guids.pop(schema_guid(text), None)

    # --- reads ----------------------------------------------------------------------

    def _versions(self, subject: str, deleted: bool) -> list[SchemaVersion]:
        found = self._subjects.get(subject, {})
        return sorted(
            (v for v in found.values() if deleted or not v.deleted), key=lambda v: v.version
        )

    def _live_versions(self, subject: str, deleted: bool = False) -> list[SchemaVersion]:
        versions = self._versions(subject, deleted)
        if not versions:
            raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
        return versions

    def subjects(self, deleted: bool = False) -> list[str]:
        with self.lock:
            return sorted(s for s in self._subjects if self._versions(s, deleted))

    def versions(self, subject: str, deleted: bool = False) -> list[int]:
        with self.lock:
            return [v.version for v in self._live_versions(subject, deleted)]

    def version(self, subject: str, version: str | int, deleted: bool = False) -> SchemaVersion:
        number = parse_version(version)
        with self.lock:
            versions = self._live_versions(subject, deleted)
            if number == -1:
                return versions[-1]
            for entry in versions:
                if entry.version == number:
                    return entry
            raise RegistryError(404, 40402, f"Version {number} not found.")

    def schema_by_id(self, schema_id: int, subject: str | None = None) -> str:
        with self.lock:
            schema = self._ids.get(schema_id)
            users = self._users.get(schema_id, set())
            if schema is None or (subject is not None and all(s != subject for s, _ in users)):
                raise RegistryError(404, 40403, f"Schema {schema_id} not found.")
            return schema

    def schema_by_guid(self, guid: str) -> tuple[int, str]:
        with self.lock:
            schema_id = self._guids.get(guid)
            if schema_id is None:
                raise RegistryError(404, 40403, f"Schema {guid} not found.")
            return schema_id, self._ids[schema_id]

    def id_users(self, schema_id: int, deleted: bool = False) -> list[SchemaVersion]:
        with self.lock:
            self.schema_by_id(schema_id)
            entries = [self._subjects[s][v] for s, v in self._users.get(schema_id, set())]
            return sorted(
                (e for e in entries if deleted or not e.deleted),
                key=lambda e: (e.subject, e.version),
            )

    def lookup(self, subject: str, schema: str, deleted: bool = False) -> SchemaVersion:
        canonical = canonical_schema(schema)
        with self.lock:
            schema_id = self._id_of.get(canonical)
            for entry in self._live_versions(subject, deleted):
                if entry.id == schema_id:
                    return entry
        raise RegistryError(404, 40403, "Schema not found.")

    def level(self, subject: str | None) -> CompatibilityLevel:
        with self.lock:
            return self._configs.get(subject) or self._configs.get(None) or DEFAULT_LEVEL

    def config(self, subject: str | None, default_to_global: bool = False) -> CompatibilityLevel:
        with self.lock:
            if subject is None or default_to_global:
                return self.level(subject)
            if subject not in self._configs:
                raise RegistryError(
                    404,
                    40408,
                    f"Subject '{subject}' does not have subject-level compatibility configured.",
                )
            return self._configs[subject]

    def all_schemas(self) -> Iterator[SchemaVersion]:
        with self.lock:
            for subject in sorted(self._subjects):
                yield from self._versions(subject, deleted=False)

    # --- commands: validate, and say which records to append --------------------------

    def register(
        self, subject: str, schema: str, schema_type: str | None = None,
        references: list[Any] | None = None,
    ) -> Outcome:  # fmt: skip
        """Register ``schema`` under ``subject`` (idempotent) after the compatibility check."""
        if schema_type not in (None, "AVRO"):
            raise RegistryError(
                422, 42201, f"Invalid schema: type {schema_type} is not supported; this "
                "registry serves AVRO schemas.",
            )  # fmt: skip
        if references:
            raise RegistryError(
                422, 42201, "Invalid schema: schema references are not supported; inline "
                "the referenced types.",
            )  # fmt: skip
        text = validated_schema(schema)
        with self.lock:
            live = self._versions(subject, deleted=False)
            schema_id = self._id_of.get(canonical_schema(text))
            for entry in live:
                if entry.id == schema_id:
                    return Outcome(entry.as_response(), [])
            reasons = self._incompatibilities(text, live, self.level(subject))
            if reasons:
                raise RegistryError(
                    409, 409, f"Schema being registered is incompatible with an earlier schema "
                    f"for subject \"{subject}\", details: {reasons}",
                )  # fmt: skip
            records: list[Record] = []
            if schema_id is None:
                schema_id = self._max_id + 1
                records.append((_ID_KEY, {"max_id": schema_id}))
            else:
                text = self._ids[schema_id]  # one id, one text: the first one registered
            number = max(self._subjects.get(subject, {}), default=0) + 1
            entry = SchemaVersion(subject, number, schema_id, text, deleted=False)
            records.append((_schema_key(subject, number), _schema_value(entry)))
            return Outcome(entry.as_response(), records)

    @staticmethod
    def _incompatibilities(
        schema: str, existing: list[SchemaVersion], level: CompatibilityLevel
    ) -> list[str]:
        if not existing or level is CompatibilityLevel.NONE:
            return []
        return check_compatibility(schema, [(e.version, e.schema) for e in existing], level)

    def test_compatibility(self, subject: str, version: str | int | None, schema: str) -> list[str]:
        """Reasons ``schema`` may not follow ``version`` (or, if None, the subject's versions
        as its level selects); an empty list means compatible."""
        text = validated_schema(schema)
        with self.lock:
            level = self.level(subject)
            if version is None:
                return self._incompatibilities(text, self._versions(subject, deleted=False), level)
            against = self.version(subject, version)
            single = CompatibilityLevel(level.removesuffix("_TRANSITIVE"))
            return self._incompatibilities(text, [against], single)

    def delete_version(self, subject: str, version: str | int, permanent: bool) -> Outcome:
        with self.lock:
            entry = self.version(subject, version, deleted=True)
            if not permanent and entry.deleted:
                raise RegistryError(
                    404, 40406, f"Subject '{subject}' Version {entry.version} was soft deleted. "
                    "Set permanent=true to delete permanently.",
                )  # fmt: skip
            if permanent:
                if not entry.deleted:
                    raise RegistryError(
                        404, 40407, f"Subject '{subject}' Version {entry.version} was not "
                        "deleted first before being permanently deleted.",
                    )  # fmt: skip
                return Outcome(entry.version, [(_schema_key(subject, entry.version), None)])
            soft = SchemaVersion(subject, entry.version, entry.id, entry.schema, deleted=True)
            return Outcome(
                entry.version, [(_schema_key(subject, entry.version), _schema_value(soft))]
            )

    def delete_subject(self, subject: str, permanent: bool) -> Outcome:
        with self.lock:
            every = self._versions(subject, deleted=True)
            live = [v for v in every if not v.deleted]
            if not every:
                raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
            if permanent:
                if live:
                    raise RegistryError(
                        404, 40405, f"Subject '{subject}' was not deleted first before being "
                        "permanently deleted.",
                    )  # fmt: skip
                records: list[Record] = [(_schema_key(subject, v.version), None) for v in every]
                if subject in self._configs:
                    records.append((_config_key(subject), None))
                return Outcome([v.version for v in every], records)
            if not live:
                raise RegistryError(
                    404, 40404, f"Subject '{subject}' was soft deleted. Set permanent=true to "
                    "delete permanently.",
                )  # fmt: skip
            return Outcome(
                [v.version for v in live],
                [
                    (
                        _schema_key(subject, v.version),
                        _schema_value(SchemaVersion(subject, v.version, v.id, v.schema, True)),
                    )
                    for v in live
                ],
            )

    def set_config(self, subject: str | None, level: object) -> Outcome:
        parsed = parse_level(level)
        return Outcome(
            {"compatibility": parsed.value},
            [(_config_key(subject), {"compatibilityLevel": parsed.value})],
        )

    def delete_config(self, subject: str | None) -> Outcome:
        with self.lock:
            previous = self.config(subject)
            return Outcome({"compatibilityLevel": previous.value}, [(_config_key(subject), None)])


def parse_version(version: str | int) -> int:
    """A version number from a path segment: 1..2^31-1, or ``latest``/-1 (returned as -1)."""
    if isinstance(version, str) and version.lower() == "latest":
        return -1
    number = int(version) if re.fullmatch(r"-?[0-9]{1,10}", str(version)) else 0
    if number == -1 or 1 <= number <= MAX_VERSION:
        return number
    raise RegistryError(
        422, 42202, f"The specified version '{version}' is not a valid version id. Allowed "
        "values are between [1, 2^31-1] and the string \"latest\"",
    )  # fmt: skip


def validated_schema(schema: str) -> str:
    """The compact text of ``schema`` once it parses as Avro and its contract is valid."""
    text = compact_schema(schema)
    try:
        parse_contract(text)
    except ContractError as exc:
        raise RegistryError(422, 42201, f"Invalid schema: {exc}") from exc
    except (RecursionError, ValueError, TypeError, AttributeError, KeyError) as exc:
        # The Avro parsers' own failures on odd input: the schema is invalid, not we.
        raise RegistryError(422, 42201, f"Invalid schema: {exc!r}") from exc
    return text

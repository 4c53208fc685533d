"""Why an event is rejected: the reasons of DESIGN.md's dead-letter headers, and one
rejection per bad event.

A ``Rejection`` carries the field and rule at fault and a message that names them; a
message may quote the offending value only when the field is not PII.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    DECODE_ERROR = "DECODE_ERROR"  # not Confluent framing, truncated or junk Avro
    UNKNOWN_SCHEMA = "UNKNOWN_SCHEMA"  # the writer schema id is not in the registry
    INCOMPATIBLE_SCHEMA = "INCOMPATIBLE_SCHEMA"  # writer cannot be resolved to the reader
    CONSTRAINT_VIOLATION = "CONSTRAINT_VIOLATION"  # a field breaks a contract constraint
    MISSING_ENTITY = "MISSING_ENTITY"  # an entity field is null or empty
    LATE_EVENT = "LATE_EVENT"  # event time older than the contract/retention allows
    FUTURE_EVENT = "FUTURE_EVENT"  # event time further ahead than the allowed skew
    PROCESSING_ERROR = "PROCESSING_ERROR"  # valid, but a step after validation failed on it


@dataclass(frozen=True)
class Rejection:
    """One bad event: its position in the batch, the reason, and what broke."""

    row: int
    reason: Reason
    message: str
    field: str | None = None
    rule: str | None = None

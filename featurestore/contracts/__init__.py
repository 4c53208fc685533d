"""Contracts: Avro schemas with featurestore metadata, and how they may evolve.

`parse_contract` validates the metadata (entity, event time, constraints, pii) carried
inside a schema; `check_compatibility` decides whether a new schema version may follow
the registered ones under a compatibility level; `compile_checks` and `split` run a
contract's constraints on a decoded batch and reject its bad rows; `BatchDecoder` turns
Confluent-framed Avro values into one frame of the contract's reader schema.
"""

from featurestore.contracts.codec import (
    BatchDecoder,
    DecodedBatch,
    FrameError,
    SchemaRef,
    parse_frame,
    polars_schema,
)
from featurestore.contracts.compatibility import (
    CompatibilityLevel,
    ContractChange,
    check_compatibility,
    describe_contract_changes,
)
from featurestore.contracts.constraints import (
    Check,
    Clock,
    compile_checks,
    find_violations,
    first_violations,
    split,
)
from featurestore.contracts.contract import (
    Constraints,
    Contract,
    FieldRules,
    contract_from_schema,
    parse_avro_schema,
    parse_contract,
)

__all__ = [
    "BatchDecoder",
    "Check",
    "Clock",
    "CompatibilityLevel",
    "Constraints",
    "Contract",
    "ContractChange",
    "DecodedBatch",
    "FieldRules",
    "FrameError",
    "SchemaRef",
    "check_compatibility",
    "compile_checks",
    "contract_from_schema",
    "describe_contract_changes",
    "find_violations",
    "first_violations",
    "parse_avro_schema",
    "parse_contract",
    "parse_frame",
    "polars_schema",
    "split",
]

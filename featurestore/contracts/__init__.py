"""Contracts: Avro schemas with featurestore metadata, and how they may evolve.

`parse_contract` validates the metadata (entity, event time, constraints, pii) carried
inside a schema; `check_compatibility` decides whether a new schema version may follow
the registered ones under a compatibility level.
"""

from featurestore.contracts.compatibility import (
    CompatibilityLevel,
    ContractChange,
    check_compatibility,
    describe_contract_changes,
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
    "CompatibilityLevel",
    "Constraints",
    "Contract",
    "ContractChange",
    "FieldRules",
    "check_compatibility",
    "contract_from_schema",
    "describe_contract_changes",
    "parse_avro_schema",
    "parse_contract",
]

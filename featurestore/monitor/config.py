"""What a consumer watches and when it alerts (the ``[monitoring]`` table of a consumer
definition)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from featurestore.contracts.contract import parse_duration_ms
from featurestore.errors import ContractError


class Monitoring(BaseModel):
    """Contract health and feature drift, checked by the consumer every
    ``check_interval``; alerts go to ``alerts_topic``, a metric and the log."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    check_interval: str = Field(default="30s", description="How often thresholds are checked.")
    window: str = Field(default="5m", description="What violation and null rates cover.")
    violation_rate: float = Field(
        default=0.05, gt=0, le=1, description="Dead-lettered share of events, per contract."
    )
    rule_rate: float = Field(
        default=0.02, gt=0, le=1, description="Share of events breaking one rule (field:rule)."
    )
    min_events: int = Field(default=100, ge=1, description="Events a window needs first.")
    null_rate: float = Field(default=0.5, gt=0, le=1, description="Null share of a field.")
    null_rates: dict[str, float] = Field(
        default_factory=dict, description="Per-field null-rate thresholds."
    )
    freshness: str = Field(default="15m", description="Newest event older than this: alert.")
    lag: int = Field(default=100_000, ge=0, description="Unread events per partition.")
    alerts_topic: str = "featurestore.alerts"
    sample_entities: int = Field(
        default=200, ge=0, description="Entities per batch whose features feed drift."
    )

    @field_validator("check_interval", "window", "freshness")
    @classmethod
    def _duration(cls, value: str, info: ValidationInfo) -> str:
        try:
            parse_duration_ms(str(info.field_name), value)
        except ContractError:
            raise ValueError(f'{value!r} is not a duration; write e.g. "30s", "5m"') from None
        return value

    def ms(self, name: str) -> int:
        """One of the durations, in milliseconds."""
        value = parse_duration_ms(name, str(getattr(self, name)))
        assert value is not None
        return value

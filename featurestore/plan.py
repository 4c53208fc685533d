"""``featurestore plan``: what deploying a project's definitions would change, checked
before anything runs, against the online store (each view version's stored layout) and
the registry (each source's latest contract).

Each finding is a `Change`: ``new`` (a view, or a version of a known view, that nothing
has written yet), ``same`` (a version already written with this layout), or ``refused``
with what to do: definitions that do not load (a feature service naming a missing
feature, a malformed file), a version whose stored layout or record format differs from
its definition (a new version is needed), a source with no contract in the registry, a
view reading a field its contract lacks, or a numeric aggregation over a field that is
not a number. A plan with a refusal exits 1, so CI can run it before a deploy.

Invariants: planning only reads (``HMGET`` of meta hashes, registry lookups); the checks
are the ones the consumer and the store would make at start, run ahead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from featurestore.contracts.contract import Contract
from featurestore.errors import ConfigError
from featurestore.features.definitions import FeatureView
from featurestore.features.spec import NUMERIC_ONLY
from featurestore.online.layout import FORMAT, layout, meta_key

Kind = Literal["new", "same", "refused"]
_NUMBERS = {"int", "long", "float", "double"}


@dataclass(frozen=True)
class Change:
    kind: Kind
    subject: str  # "card_spend v2", "contract payments-value", "definitions"
    detail: str

    def line(self) -> str:
        mark = {"new": "+", "same": "=", "refused": "!"}[self.kind]
        return f"{mark} {self.subject}: {self.detail}"


def plan_views(
    views: Mapping[str, Mapping[int, FeatureView]],
    prefix: str,
    stored: Callable[[list[str]], list[tuple[bytes | None, bytes | None]]],
    contract: Callable[[str], Contract | None],
) -> list[Change]:
    """Every defined view version against its stored meta hash (``stored`` gives
    ``values`` and ``format`` per meta key, in one round trip) and its source's
    contract (None: not registered)."""
    pairs = [(name, version, view) for name, known in sorted(views.items())
             for version, view in sorted(known.items())]  # fmt: skip
    metas = stored([meta_key(prefix, name, version) for name, version, _ in pairs])
    written = {name for (name, _, _), (values, _) in zip(pairs, metas, strict=True) if values}
    changes: list[Change] = []
    for (name, version, view), (values, found_format) in zip(pairs, metas, strict=True):
        subject = f"{name} v{version}"
        if values is None:
            what = "a new version of a view already served" if name in written else "a new view"
            changes.append(Change("new", subject, what))
        elif int(found_format or 1) != FORMAT:
            changes.append(Change("refused", subject, (
                f"holds online records of format {int(found_format or 1)}, and this "
                f"featurestore writes format {FORMAT}: give the view a new version and "
                "backfill it")))  # fmt: skip
        elif values.decode() != layout(view):
            changes.append(Change("refused", subject, (
                f"its columns or aggregations changed (stored {values.decode()!r}, defined "
                f"{layout(view)!r}): a version's layout is fixed, so bump `version` and "
                "backfill the new one")))  # fmt: skip
        else:
            changes.append(Change("same", subject, "already written with this layout"))
    contracts: dict[str, Contract | None] = {}
    for name, version, view in pairs:
        if view.source not in contracts:
            contracts[view.source] = contract(view.source)
            if contracts[view.source] is None:
                changes.append(Change("refused", f"contract {view.source}", (
                    "no contract registered under this subject: register it first "
                    f"(`featurestore schemas register {view.source} <schema.avsc>`)")))  # fmt: skip
        changes += _fields(f"{name} v{version}", view, contracts[view.source])
    return changes


def _fields(subject: str, view: FeatureView, contract: Contract | None) -> list[Change]:
    """A view's aggregations against its source's contract."""
    if contract is None:
        return []
    out = []
    for column in view.values:
        if column not in contract.fields:
            out.append(Change("refused", subject, (
                f"it aggregates field {column!r}, which contract {view.source} lacks (its "
                f"fields: {', '.join(contract.fields)})")))  # fmt: skip
    numeric = {(f.column, f.function) for f in view.features if f.function in NUMERIC_ONLY}
    for column, function in sorted(numeric):
        rules = contract.fields.get(column)
        if rules is not None and not set(rules.avro_type.split("|")) <= _NUMBERS:
            out.append(Change("refused", subject, (
                f"it takes the {function} of {column!r}, which contract {view.source} "
                f"types {rules.avro_type}: only numbers have a {function}")))  # fmt: skip
    return out


def refused_definitions(error: ConfigError) -> Change:
    return Change("refused", "definitions", str(error))


def summary(changes: list[Change]) -> dict[str, Any]:
    """Counts by kind, and whether the plan may be deployed."""
    counts = {kind: sum(c.kind == kind for c in changes) for kind in ("new", "same", "refused")}
    return {**counts, "ok": counts["refused"] == 0}

"""`plan.plan_views` without services: stored metas and contracts given as data."""

from __future__ import annotations

from featurestore.contracts import parse_contract
from featurestore.features.definitions import FeatureView
from featurestore.online.layout import FORMAT, layout
from featurestore.plan import plan_views, summary

VIEW = FeatureView.model_validate(
    {"name": "v", "source": "s", "entity": "card", "owner": "o",
     "aggregations": [{"column": "amount", "functions": ["sum"], "windows": ["1h"]}]}
)  # fmt: skip
CONTRACT = parse_contract(
    '{"type": "record", "name": "p", "fields": [{"name": "amount", "type": "double"}]}'
)


def test_records_of_another_format_are_refused_with_the_fix() -> None:
    def stored(keys: list[str]) -> list[tuple[bytes | None, bytes | None]]:
        return [(layout(VIEW).encode(), str(FORMAT - 1).encode()) for _ in keys]

    changes = plan_views({"v": {1: VIEW}}, "fs", stored, lambda _: CONTRACT)
    assert [c.kind for c in changes] == ["refused"]
    assert "format" in changes[0].detail
    assert "new version" in changes[0].detail
    assert summary(changes) == {"new": 0, "same": 0, "refused": 1, "ok": False}
    assert changes[0].line().startswith("! v v1: holds online records of format")


def test_a_known_layout_with_its_contract_is_unchanged() -> None:
    def stored(keys: list[str]) -> list[tuple[bytes | None, bytes | None]]:
        assert keys == ["fs:v:v1"]
        return [(layout(VIEW).encode(), str(FORMAT).encode())]

    changes = plan_views({"v": {1: VIEW}}, "fs", stored, lambda _: CONTRACT)
    assert [(c.kind, c.subject) for c in changes] == [("same", "v v1")]
    assert summary(changes)["ok"]

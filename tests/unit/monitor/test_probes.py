"""The consumer's probes: live while its loop turns (waiting on a dependency included),
ready only while it consumes; each answer says why."""

from __future__ import annotations

from typing import Any

from featurestore.monitor.probes import Probes, with_probes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def call(app: Any, path: str) -> tuple[str, str]:
    seen: list[str] = []
    body = app({"PATH_INFO": path}, lambda status, headers: seen.append(status))
    return seen[0], b"".join(body).decode()


def test_ready_only_while_consuming_live_until_the_loop_stalls() -> None:
    clock = Clock()
    probes = Probes(stall_s=60, clock=clock)
    assert probes.live()[0]
    assert probes.ready() == (False, "not ready: waiting to starting")
    probes.waiting(None)
    assert probes.ready() == (True, "ready: consuming")
    probes.waiting("apply card_spend to Redis")  # an outage: alive, not ready
    clock.now += 59
    assert probes.live()[0]
    assert probes.ready() == (False, "not ready: waiting to apply card_spend to Redis")
    probes.waiting(None)
    clock.now += 61  # nothing turned the loop since
    live, why = probes.live()
    assert not live
    assert why.startswith("stuck")
    assert not probes.ready()[0]
    probes.beat()
    assert probes.live()[0]
    assert probes.ready()[0]


def test_the_probe_routes_answer_with_their_reason_and_the_rest_goes_to_metrics() -> None:
    clock = Clock()
    probes = Probes(stall_s=60, clock=clock)

    def metrics(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"# metrics"]

    app = with_probes(metrics, probes)
    assert call(app, "/healthz")[0] == "200 OK"
    assert call(app, "/readyz") == ("503 Service Unavailable", "not ready: waiting to starting\n")
    probes.waiting(None)
    assert call(app, "/readyz") == ("200 OK", "ready: consuming\n")
    assert call(app, "/metrics") == ("200 OK", "# metrics")
    clock.now += 120
    assert call(app, "/healthz")[0] == "503 Service Unavailable"

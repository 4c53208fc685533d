"""Retries of a consumer's dependencies are spread: waits vary around the backoff."""

from __future__ import annotations

from featurestore.stream.runtime import jittered


def test_a_retry_waits_the_backoff_give_or_take_half_and_not_in_lockstep() -> None:
    waits = [jittered(2.0) for _ in range(200)]
    assert all(1.0 <= w <= 3.0 for w in waits)
    assert len({round(w, 6) for w in waits}) > 150  # consumers that failed together spread
    assert min(waits) < 1.5
    assert max(waits) > 2.5

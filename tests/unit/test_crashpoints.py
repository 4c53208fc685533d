"""The crash-point plan a fault-injection test writes in FEATURESTORE_CRASH_AT."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from featurestore.crashpoints import POINTS, parse
from featurestore.errors import ConfigError


def test_a_plan_names_points_and_counts() -> None:
    assert parse("") == {}
    assert parse("commit.offsets:3, poll:1") == {"commit.offsets": 3, "poll": 1}


@pytest.mark.parametrize(
    ("text", "says"),
    [("comit:1", "unknown crash point 'comit'; known: poll, decode"), ("poll", "poll:N"),
     ("poll:0", "N >= 1"), ("poll:x", "poll:N")],
)  # fmt: skip
def test_a_bad_plan_says_what_to_write(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace(".", r"\.")):
        parse(text)


def test_the_process_dies_at_the_nth_arrival_and_not_before() -> None:
    script = (
        "from featurestore import crashpoints\n"
        "for i in range(5):\n"
        "    print(i, flush=True)\n"
        "    crashpoints.reach('decode')\n"
        "    crashpoints.reach('poll')\n"
    )
    env = {**os.environ, "FEATURESTORE_CRASH_AT": "decode:3"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == -9
    assert done.stdout.split() == ["0", "1", "2"]
    assert "poll" in POINTS

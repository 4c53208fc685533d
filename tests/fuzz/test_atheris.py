"""A bounded run of the atheris fuzz target `fuzz_decode.py` (decoder + constraints):
pure logic, no services. The seeded corpus and a fixed libFuzzer seed make it the same
run each time; a crash or a broken property exits non-zero and fails the test with the
fuzzer's report. Longer runs are for a person: see the target's docstring."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

TARGET = Path(__file__).with_name("fuzz_decode.py")
RUNS = 1500  # ~10 s at the ~200 exec/s of a laptop; -max_total_time bounds a slow machine

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris is not installed: it has wheels for CPython 3.11-3.14 on x86-64 Linux "
    "only (the test extra installs it there)",
)


def test_the_decode_and_validate_target_survives_a_bounded_fuzz_run(tmp_path: Path) -> None:
    command = [
        sys.executable, str(TARGET), str(tmp_path / "corpus"), f"-runs={RUNS}",
        "-max_total_time=20", "-seed=1", f"-artifact_prefix={tmp_path}/",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    report = done.stderr[-6000:]
    assert done.returncode == 0, report
    assert not list(tmp_path.glob("crash-*")), report
    stats = re.findall(r"^fuzz_decode: (.*)$", done.stderr, re.MULTILINE)
    assert stats, report
    last = dict(item.split("=") for item in stats[-1].split())
    assert int(last["valid"]) > 0, "no seed decoded to a valid row: the harness is broken"
    assert int(last["fast_rows"]) > 0, "the decoder's batch path never ran"

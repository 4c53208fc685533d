"""Processes the local stack owns: spawn detached, recognise, stop.

A recorded process is ours only while its pid is alive AND its command line still
contains the marker we started it with (its config file path): a pid reused by
another program is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from featurestore.errors import LocalServiceError


@dataclass(frozen=True)
class ProcessRecord:
    """What ``up`` remembers of a process it started."""

    pid: int
    marker: str
    log: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessRecord:
        return cls(pid=int(data["pid"]), marker=str(data["marker"]), log=str(data["log"]))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the kernel says is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port``; SO_REUSEADDR as Kafka and Redis set it,
    so connections of a stopped server lingering in TIME_WAIT do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def spawn(cmd: list[str], log_path: Path, cwd: Path, marker: str) -> ProcessRecord:
    """Start ``cmd`` in its own session, output to ``log_path``; it outlives the caller."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _await_command_line(proc.pid)
    return ProcessRecord(pid=proc.pid, marker=marker, log=str(log_path))


def _await_command_line(pid: int, timeout: float = 5.0) -> None:
    """Wait until the new process's command line can be read.

    Popen returns once exec() has begun, but the kernel sets the new program's
    arguments a moment later: until then /proc/PID/cmdline reads empty, and an empty
    command line is not ours (``is_running``). Returns early if the process is gone or
    there is no /proc (macOS)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cmdline.read_bytes():
                return
        except OSError:
            return
        time.sleep(0.001)


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def is_running(record: ProcessRecord) -> bool:
    """True while the recorded process is alive and still the one we started."""
    _reap(record.pid)
    proc = Path(f"/proc/{record.pid}")
    if proc.exists():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return False
        state = stat.rsplit(")", 1)[-1].split()[0]
        if state in ("Z", "X"):
            return False
        # An empty command line is a kernel thread or a process between exec() and its
        # new arguments: not provably ours (spawn waits out that moment for its own).
        return bool(cmdline) and record.marker in cmdline
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    # No /proc (macOS): the pid is alive; we cannot check its command line.
    return True


def stop(record: ProcessRecord, timeout: float = 20.0) -> bool:
    """SIGTERM, wait up to ``timeout``, then SIGKILL. Returns whether it was running."""
    if not is_running(record):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(record):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGKILL)
    while is_running(record):
        time.sleep(0.05)
    return True


def wait_until_ready(
    name: str,
    answers: Callable[[], bool],
    record: ProcessRecord | None,
    timeout: float,
    expectation: str,
) -> float:
    """Poll ``answers()`` until it is true; seconds waited. Fails at once with the log's
    tail when the process exits, or after ``timeout`` saying what was expected.
    ``answers`` returns False (or raises) while the service is not up yet."""
    started = time.monotonic()
    while True:
        if record is not None and not is_running(record):
            raise LocalServiceError(
                f"{name} exited while starting; last lines of {record.log}:\n{log_tail(record.log)}"
            )
        try:
            if answers():
                return time.monotonic() - started
        except Exception:  # not listening yet: connection refused, timeouts
            pass
        if time.monotonic() - started > timeout:
            where = f"; its log is {record.log}" if record else ""
            raise LocalServiceError(f"{name} {expectation} within {timeout:.0f}s{where}.")
        time.sleep(0.05)


def log_tail(path: str | Path, lines: int = 25) -> str:
    """The last lines of a log, for error messages."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:])

"""run.py's plumbing: the sides as child processes, a raw HTTP/1.1 client for the servers,
and value comparison. Runs in the repo's virtualenv."""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from protocol import MARK

HOST = "127.0.0.1"


class SideError(RuntimeError):
    pass


def error_of(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:4000]


class Side:
    """A side in a child process (its own session): marked JSON lines from its stdout,
    commands to its stdin, everything else it prints to ``logs/<label>.log``."""

    def __init__(self, label: str, command: list[str], logs: Path) -> None:
        self.label, self.log_path = label, logs / f"{label}.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, cwd=Path(__file__).parent,
                                     start_new_session=True)  # fmt: skip
        self.results: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(MARK):
                self.results.put(json.loads(line[len(MARK) :]))
            else:
                self.log.write(line)
                self.log.flush()
        self.results.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        """The next result, which must be of ``kind``; without its "kind"."""
        try:
            got = self.results.get(timeout=timeout)
        except queue.Empty:
            raise SideError(f"{self.label}: no {kind!r} within {timeout:.0f} s; log: "
                            f"{self.tail()}") from None  # fmt: skip
        if got is None:
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
            raise SideError(f"{self.label} exited {self.proc.returncode} before {kind!r}; "
                            f"log: {self.tail()}")  # fmt: skip
        if got.pop("kind", None) != kind:
            raise SideError(f"{self.label}: wanted {kind!r}, got {str(got)[:300]}")
        return got

    def tail(self, lines: int = 15) -> str:
        self.log.flush()
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def close(self, timeout: float = 60) -> int | None:
        with suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self.log.close()
        return self.proc.returncode

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # our own child's session
        self.proc.wait(30)


class Http:
    """One keep-alive HTTP/1.1 connection; reconnects once if the server closed it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.reader: Any = None
        self.reconnects = -1  # the first connection is not one

    def request(self, path: str, body: bytes) -> bytes:
        head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                )  # fmt: skip
        return head.encode() + body

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        """(status, body) of one request."""
        for attempt in (0, 1):
            if self.sock is None:
                self.sock = socket.create_connection((HOST, self.port), timeout=120)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.reader = self.sock.makefile("rb")
                self.reconnects += 1
            try:
                return self._exchange(request)
            except OSError:
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _exchange(self, request: bytes) -> tuple[int, bytes]:
        assert self.sock is not None
        self.sock.sendall(request)
        status = self.reader.readline()
        if not status:
            raise ConnectionError("the server closed the connection")
        length, chunked, close = 0, False, False
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                close = value == b"close"
        body = self._chunks() if chunked else self.reader.read(length)
        if close:
            self.close()
        return int(status.split()[1]), body

    def _chunks(self) -> bytes:
        parts = []
        while size := int(self.reader.readline().split(b";")[0], 16):
            parts.append(self.reader.read(size))
            self.reader.readline()
        self.reader.readline()
        return b"".join(parts)

    def close(self) -> None:
        if self.sock is not None:
            with suppress(OSError):
                self.sock.close()
        self.sock = None


def wait_http(port: int, path: str, proc: subprocess.Popen[Any], timeout: float = 120) -> None:
    """Until GET ``path`` answers 200 (or the server exited, or ``timeout``)."""
    deadline = time.monotonic() + timeout
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited {proc.returncode}")
        with suppress(OSError), socket.create_connection((HOST, port), timeout=2) as s:
            s.sendall(request)
            if s.recv(64).split(b" ")[1:2] == [b"200"]:
                return
        time.sleep(0.3)
    raise RuntimeError(f"the server did not answer GET {path} with 200 in {timeout:.0f} s")


@contextmanager
def server(command: list[str], port: int, ready: str, log: Path) -> Iterator[int]:
    """A server in its own session, ready; terminated (then killed) at the end."""
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            wait_http(port, ready, proc)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # our own child's session
                proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def same(a: Any, b: Any, rel: float = 1e-9) -> bool:
    """Equal values: null and NaN alike; numbers within ``rel``."""
    a, b = (None if isinstance(x, float) and math.isnan(x) else x for x in (a, b))
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b or abs(a - b) <= rel * max(abs(a), abs(b))
    return bool(a == b)


def compare_columns(want: dict[str, list[Any]], got: dict[str, list[Any]],
                    names: list[str]) -> dict[str, Any]:  # fmt: skip
    """Values of ``names`` in two answers: how many, how many differ, a few examples."""
    values, bad, examples = 0, 0, []
    for name in names:
        if name not in got:
            bad += 1
            examples.append(f"{name}: missing")
            continue
        for i, (a, b) in enumerate(zip(want[name], got[name], strict=True)):
            values += 1
            if not same(a, b):
                bad += 1
                if len(examples) < 8:
                    examples.append(f"{name}[{i}]: {a!r} vs {b!r}")
    return {"values": values, "mismatches": bad, "examples": examples}

"""What every benchmark prints and records beside its numbers: the machine it ran on
(CPU model, cores, memory, platform, Python) and the versions of the libraries it
measured, and the memory of a process. Standard library only: the peer benchmarks import
it in other virtualenvs too. Compare numbers only within one run: these machines are
shared and noisy."""

from __future__ import annotations

import os
import platform
import sys
from contextlib import suppress
from importlib import metadata
from pathlib import Path
from typing import Any


def describe(packages: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"cpu": platform.processor(), "cores": os.cpu_count(), "memory_gb": None}
    with suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        info["cpu"] = next(x.split(":", 1)[1].strip() for x in lines if x.startswith("model name"))
    with suppress(OSError, StopIteration):
        lines = Path("/proc/meminfo").read_text().splitlines()
        kb = next(int(x.split()[1]) for x in lines if x.startswith("MemTotal"))
        info["memory_gb"] = round(kb / 2**20, 1)
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {**info, "platform": platform.platform(), "python": sys.version.split()[0],
            **extra, "versions": versions}  # fmt: skip


def memory_mb(pid: int | str = "self") -> dict[str, float]:
    """VmRSS and VmHWM (the peak RSS) of a process, in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out

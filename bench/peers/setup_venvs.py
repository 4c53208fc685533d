"""Make each peer's virtualenv: bench/peers/.venvs/<peer>, `python3 -m venv` then
`pip install -r requirements-<peer>.txt` (every package pinned). A venv is made again
when its requirements file changed since it was installed (a marker holds the file's
sha256). A failure is reported, not raised: run.py records it and measures the rest.

    python3 bench/peers/setup_venvs.py [--force] [PEER ...]     (peers: feast, quix)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"
PEERS = {"feast": ("feast", "dask", "pandas", "pyarrow", "redis", "hiredis", "numpy", "fastapi",
                   "uvicorn", "gunicorn"),
         "quix": ("quixstreams", "confluent-kafka", "fastavro", "rocksdict", "redis")}  # fmt: skip
MARKER = ".requirements-sha256"


def python_of(peer: str) -> Path:
    return VENVS / peer / "bin" / "python"


def requirements(peer: str) -> Path:
    return HERE / f"requirements-{peer}.txt"


def digest(peer: str) -> str:
    return hashlib.sha256(requirements(peer).read_bytes()).hexdigest()


def installed(peer: str) -> bool:
    marker = VENVS / peer / MARKER
    return python_of(peer).exists() and marker.exists() and marker.read_text() == digest(peer)


def versions(peer: str) -> dict[str, str | None]:
    """The versions of the peer's main packages, as its venv imports them."""
    code = ("import json, sys; from importlib import metadata as m\n"
            "def v(p):\n try: return m.version(p)\n except m.PackageNotFoundError: return None\n"
            "out = {p: v(p) for p in sys.argv[1:]} | {'python': sys.version.split()[0]}\n"
            "print(json.dumps(out))")  # fmt: skip
    done = subprocess.run([str(python_of(peer)), "-c", code, *PEERS[peer]],
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return dict(json.loads(done.stdout))


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def setup(peer: str, force: bool = False, say: Any = print) -> dict[str, Any]:
    """{"ok", "versions" | "error", "seconds", "installed_now"} for one peer."""
    started = time.perf_counter()
    out: dict[str, Any] = {"requirements": str(requirements(peer).relative_to(HERE.parents[1]))}
    try:
        if force or not installed(peer):
            say(f"  installing {peer} into {VENVS / peer} (pip, pinned) ...")
            shutil.rmtree(VENVS / peer, ignore_errors=True)
            steps = [[shutil.which("python3") or sys.executable, "-m", "venv", str(VENVS / peer)],
                     [str(python_of(peer)), "-m", "pip", "install", "--disable-pip-version-check",
                      "-q", "-r", str(requirements(peer))]]  # fmt: skip
            for step in steps:
                done = subprocess.run(
                    step, capture_output=True, text=True, timeout=1800, check=False
                )
                if done.returncode:
                    raise RuntimeError(f"`{' '.join(step)}` exited {done.returncode}:\n"
                                       + tail(done.stderr or done.stdout))  # fmt: skip
            (VENVS / peer / MARKER).write_text(digest(peer))
            out["installed_now"] = True
        out |= {"ok": True, "versions": versions(peer)}
    except Exception as exc:  # recorded in the results, not raised
        out |= {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("peers", nargs="*", help=f"some of {', '.join(PEERS)} (default: all)")
    parser.add_argument("--force", action="store_true", help="make the venvs again")
    args = parser.parse_args(argv)
    if unknown := set(args.peers) - set(PEERS):
        parser.error(f"unknown peers {sorted(unknown)}; known: {', '.join(PEERS)}")
    results = {peer: setup(peer, args.force) for peer in args.peers or PEERS}
    print(json.dumps(results, indent=2))
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

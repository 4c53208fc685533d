"""How long the local services take to become ready, and how much memory they hold
once they are: `featurestore local up` in a fresh home, several times.

Ready means the real check `local up` makes (Kafka: a metadata request; Redis: PING;
registry: GET /subjects). Memory is each process's RSS right after it was ready.

    .venv/bin/python bench/local_start.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from machine import describe  # bench/machine.py: this folder is on sys.path

from featurestore.local import LocalStack
from featurestore.settings import Settings

RESULTS = Path(__file__).parent / "results" / "local_start.json"


def one_run(settings: Settings) -> dict[str, dict[str, float | None]]:
    with tempfile.TemporaryDirectory() as home:
        stack = LocalStack(Path(home), settings.cache_dir, settings.kafka_version)
        started = time.monotonic()
        try:
            stack.up()
            wall = time.monotonic() - started
            status = stack.status()
            run = {
                name: {"ready_s": s.ready_seconds, "rss_mb": s.rss_mb} for name, s in status.items()
            }
            run["all"] = {"ready_s": round(wall, 2), "rss_mb": None}
            return run
        finally:
            stack.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh starts to measure")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON file")
    args = parser.parse_args()
    settings = Settings()
    LocalStack(Path(tempfile.gettempdir()), settings.cache_dir).distribution.ensure()
    runs = []
    for n in range(args.runs):
        runs.append(one_run(settings))
        print(f"run {n + 1}: " + ", ".join(
            f"{k} {v['ready_s']}s" + (f" {v['rss_mb']} MB" if v["rss_mb"] else "")
            for k, v in runs[-1].items()
        ))  # fmt: skip
    summary = {
        name: {
            metric: {"min": min(vals), "median": statistics.median(vals), "max": max(vals)}
            for metric in ("ready_s", "rss_mb")
            if (vals := [r[name][metric] for r in runs if r[name][metric] is not None])
        }
        for name in runs[0]
    }
    machine = describe(("confluent-kafka", "redis", "uvicorn"), kafka=settings.kafka_version)
    print(json.dumps({"machine": machine, "summary": summary}, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"machine": machine, "runs": runs, "summary": summary}, indent=2)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

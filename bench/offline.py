"""Point-in-time retrieval: `get_historical_features` over a Parquet event history, in one run.

setup: a synthetic history of card payments (--cards cards, --days days ending at today's
midnight UTC; per-card rates lognormal around --per-day a day, capped at 150, so a few cards
pay dozens of times a day; favourite merchants, a home country) written with `EventWriter` in
time order, --write-batch events per call, to a temporary offline store. 5 card views x 10
features = 50 features (the set bench/online.py serves: amount count/sum/mean/max/std over
10m/1h/24h/7d, distinct merchants/categories/countries/channels/currencies, last merchant/
country/channel, payment counts over 5m..7d, amount min/max/last). Entity rows: cards drawn
uniformly x times drawn uniformly within the history.

Cases, each in a fresh child process (so each has its own peak RSS, VmHWM, polled by this
process; a child past --max-seconds is killed and its rows done so far give its rate):
  baseline   a process that only imported polars
  shipped    featurestore.offline.history.get_historical_features, --small rows (x --repeat)
             with chunk_rows 200,000, and --large rows at each of --chunks (chunk_rows)

Checks, on the --small rows in this process before anything is timed (exit code 1 if one
fails): chunk_rows 3,000 gives exactly the values of chunk_rows 200,000 (chunks of rows
sorted by entity, so entities straddle chunk boundaries); the rows come back in input order
(keys, times and labels unchanged); and the 10 card_velocity features (payment counts
5m..7d, amount min/max, last amount) equal a brute force over the raw Parquet events (each
row joined to its card's events, filtered to [floor_g(t) - W + g, t]), exactly.

Where the time goes: timers replace module attributes where the shipped code looks them up
(the product code is not edited): in featurestore.offline.history `_source_values` (its time
outside `tile_partials` and `as_of` is the scan, filter and collect of events), `tile_partials`
(once per granularity) and `as_of`; in featurestore.features.point_in_time `_tile_positions`
(the binary search), `tile_partials` (t's own tile) and `attach`; in aggregates `hash_column`
(the distinct sketches). Names the shipped code lacks are skipped. Recorded for the --small
case in this process and for each --large case in its child (a few hundred clock reads).
Memory: peak RSS per case against the whole history's in-memory size (`estimated_size`).
Targets (issue): --large rows under 10 s, memory bounded by the working set. Peer (DESIGN.md,
this machine): Feast get_historical_features 10k rows x 50 features 1.57 s.

The machine is shared and noisy: the 1-minute load average is recorded beside every case;
compare ratios within one run.

    .venv/bin/python bench/offline.py [--cards N] [--days D] [--max-seconds S] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import card_views  # bench/card_views.py
import numpy as np
import polars as pl
from machine import describe, memory_mb  # bench/machine.py: this folder is on sys.path
from polars.testing import assert_frame_equal
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress, TimeRemainingColumn

import featurestore.features.aggregates as aggregates_module
import featurestore.features.point_in_time as point_in_time_module
import featurestore.offline.history as history_module
from featurestore.contracts.codec import polars_schema
from featurestore.features.definitions import FeatureView
from featurestore.offline import EventWriter

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "offline.json"
CONTRACT = (ROOT / "schemas" / "card_payment.v1.avsc").read_text()
SUBJECT, JOIN_KEYS, AT = "payments-value", {"card": ["card_id"]}, "event_timestamp"
DAY_MS = 86_400_000
FEAST_10K_S = 1.57  # DESIGN.md: Feast get_historical_features, 10k rows x 50 features
TARGET_S = 10.0  # the issue: 1M rows under 10 s
HOMES = ["DE"] * 4 + ["FR", "FR", "NL", "ES", "IT", "US", "GB", "PL"]
CHANNELS = ["POS"] * 5 + ["ONLINE"] * 3 + ["ATM", "MOTO"]
CATEGORIES = ["5411", "5812", "5999", "4111", "6011", "5541", "5732"]
CURRENCY = {"US": "USD", "GB": "GBP", "PL": "PLN"}


def views() -> list[FeatureView]:
    return card_views.views(SUBJECT)


def feature_refs() -> list[str]:
    return [f"{v.name}:{f.name}" for v in views() for f in v.features]


def history(cards: int, days: float, per_day: float, seed: int = 7) -> pl.DataFrame:
    """Card payments ending at today's midnight UTC, in time order, with source offsets."""
    rng = np.random.default_rng(seed)
    end = int(time.time() * 1000) // DAY_MS * DAY_MS
    start = end - int(days * DAY_MS)
    rate = np.minimum(rng.lognormal(math.log(per_day), 1.0, cards), 150.0)
    card = np.repeat(np.arange(cards), rng.poisson(rate * days))
    n = card.size
    home = rng.integers(0, len(HOMES), cards)
    country = np.where(rng.random(n) < 0.08, rng.integers(0, len(HOMES), n), home[card])
    favourites, kept = rng.integers(0, 50_000, (cards, 8)), rng.integers(2, 9, cards)
    pick = (rng.random(n) * kept[card]).astype(np.int64)
    merchant = np.where(rng.random(n) < 0.7, favourites[card, pick], rng.integers(0, 50_000, n))
    raw = pl.DataFrame({
        "card": card, "merchant": merchant, "pid": rng.integers(0, 2**62, n),
        "amount": np.minimum(np.round(rng.lognormal(3, 1.2, n), 2), 50_000.0),
        "country": pl.Series(HOMES).gather(country),
        "channel": pl.Series(CHANNELS).gather(rng.integers(0, len(CHANNELS), n)),
        "t": rng.integers(start, end, n),
    })  # fmt: skip
    pid = pl.col("pid")
    ip = pl.format("10.{}.{}.{}", pid % 256, pid // 256 % 256, pid // 65_536 % 256)
    raw = raw.sort("t")
    events = raw.with_columns(
        pl.format("pay_{}", pid).alias("payment_id"),
        pl.format("card_{}", pl.col("card").cast(pl.String).str.zfill(6)).alias("card_id"),
        pl.format("merchant_{}", pl.col("merchant")).alias("merchant_id"),
        pl.Series("merchant_category", CATEGORIES).gather(raw["merchant"] % len(CATEGORIES)),
        pl.col("country").replace_strict(CURRENCY, default="EUR").alias("currency"),
        pl.when(pl.col("channel") == "ONLINE").then(ip).alias("ip_address"),
        pl.col("t").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC").alias("ts"),
        (pl.col("card") % 4).cast(pl.Int32).alias("_partition"),  # a card lives on one
        pl.lit("payments").alias("_topic"),
    )  # fmt: skip
    schema = polars_schema(CONTRACT)
    return events.select(
        *[pl.col(name).cast(dtype) for name, dtype in schema.items()],
        "_topic", "_partition",
        pl.int_range(pl.len(), dtype=pl.Int64).over("_partition").alias("_offset"),
    )  # fmt: skip


def entity_rows(n: int, cards: int, span: tuple[int, int], seed: int) -> pl.DataFrame:
    """Training rows: uniformly drawn cards at uniformly drawn times within the history."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame({"card": rng.integers(0, cards, n), "t": rng.integers(*span, n)}).select(
        pl.format("card_{}", pl.col("card").cast(pl.String).str.zfill(6)).alias("card_id"),
        pl.col("t").cast(pl.Datetime("ms")).dt.replace_time_zone("UTC").alias(AT),
        pl.int_range(pl.len()).alias("label"),
    )


# Where the time goes: timing wrappers around the shipped code's stages.

SCAN = "scan + filter + collect events (rest of _source_values)"
SOURCE_TOTAL = "_source_values (total)"
TILES = "tile_partials (once per granularity)"
AS_OF = "as_of (total)"
AS_OF_REST = "as_of: rest (t's tile events join, gather by position, combine)"
HASHING = "sketch hashing (hash_column, inside every tile_partials above)"
OTHER = "other (chunking, restoring input order, output)"
WRAPPED = [
    (history_module, "_source_values", SOURCE_TOTAL),
    (history_module, "tile_partials", TILES),
    (history_module, "as_of", AS_OF),
    (point_in_time_module, "_tile_positions", "as_of: window tile positions (binary search)"),
    (point_in_time_module, "tile_partials", "as_of: t's own tile partials"),
    (point_in_time_module, "attach", "as_of: finish (attach)"),
    (aggregates_module, "hash_column", HASHING),
]
CHECK_CHUNK = 3_000  # chunk_rows compared with 200,000 on the small case


class Stages:
    """Seconds and calls per named stage."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: defaultdict[str, int] = defaultdict(int)

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started
            self.calls[stage] += 1


@contextmanager
def timed_stages(stages: Stages) -> Iterator[None]:
    """Wrap the `WRAPPED` module attributes (those that exist) with timers, then restore."""
    present = [(m, name, stage) for m, name, stage in WRAPPED if hasattr(m, name)]
    originals = [getattr(module, name) for module, name, _ in present]

    def timed(fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with stages.time(stage):
                return fn(*args, **kwargs)

        return wrapper

    for (module, name, stage), fn in zip(present, originals, strict=True):
        setattr(module, name, timed(fn, stage))
    try:
        yield
    finally:
        for (module, name, _), fn in zip(present, originals, strict=True):
            setattr(module, name, fn)


def stage_table(stages: Stages, total: float) -> list[dict[str, Any]]:
    """Stages in order; nested ones start with "  - ". The scan is `_source_values` minus
    `tile_partials` and `as_of`; "other" is the total minus `_source_values`."""
    seconds, calls = dict(stages.seconds), dict(stages.calls)
    tiles, as_of = seconds.get(TILES, 0.0), seconds.get(AS_OF, 0.0)
    rows: list[tuple[str, float, int, bool]] = []
    if SOURCE_TOTAL in seconds:
        rows.append((SCAN, seconds[SOURCE_TOTAL] - tiles - as_of, calls[SOURCE_TOTAL], False))
    rows += [(TILES, tiles, calls.get(TILES, 0), False), (AS_OF, as_of, calls.get(AS_OF, 0), False)]
    inner = [s for _, _, s in WRAPPED if s.startswith("as_of:") and s in seconds]
    rows += [(s, seconds[s], calls[s], True) for s in inner]
    rows.append((AS_OF_REST, as_of - sum(seconds[s] for s in inner), calls.get(AS_OF, 0), True))
    if HASHING in seconds:
        rows.append((HASHING, seconds[HASHING], calls[HASHING], True))
    rows.append((OTHER, total - seconds.get(SOURCE_TOTAL, tiles + as_of), 0, False))
    return [
        {"stage": ("  - " if nested else "") + stage, "calls": n,
         "seconds": round(s, 2), "pct": round(100 * s / total, 1)}
        for stage, s, n, nested in rows
    ]  # fmt: skip


# Child processes: one case each, so each has its own peak RSS.


def child(spec: dict[str, Any]) -> int:
    """Run one case; print progress lines and one result line (JSON) to stdout."""
    rows = entity_rows(spec["rows"], spec["cards"], tuple(spec["span"]), spec["seed"])
    all_views = {v.name: v for v in views()}
    before = memory_mb(os.getpid())
    stages, done = Stages(), 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        print(f"progress {done}", flush=True)

    started = time.perf_counter()
    with timed_stages(stages):
        out = history_module.get_historical_features(
            rows, feature_refs(), views=all_views, join_keys=JOIN_KEYS, offline_root=spec["root"],
            chunk_rows=spec["chunk_rows"], full_feature_names=True, progress=progress,
        )  # fmt: skip
    seconds = time.perf_counter() - started
    status = memory_mb(os.getpid())
    result = {"seconds": round(seconds, 2), "shape": list(out.shape),
              "rss_before_mb": before["VmRSS"], "peak_rss_mb": status["VmHWM"],
              "stages": stage_table(stages, seconds)}  # fmt: skip
    print("result " + json.dumps(result), flush=True)
    return 0


def baseline_rss() -> dict[str, float]:
    """Peak RSS of a process that only imported polars (and did nothing with it)."""
    code = "import os, polars; print(open(f'/proc/{os.getpid()}/status').read())"
    text = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k: round(int(fields[k].split()[0]) / 1024, 1) for k in ("VmRSS", "VmHWM")}


def run_case(spec: dict[str, Any], max_seconds: float, progress: Progress) -> dict[str, Any]:
    """One case in a child process: wall time, peak RSS (polled), killed past max_seconds."""
    label = f"{spec['rows']:,} rows, chunks of {spec['chunk_rows']:,}"
    task = progress.add_task(label, total=spec["rows"])
    load_before = os.getloadavg()[0]
    command = [sys.executable, __file__, "--child", json.dumps(spec)]
    child_process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    stdout, lines = child_process.stdout, list[str]()
    assert stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True)
    reader.start()
    started, peak, done, timed_out = time.perf_counter(), 0.0, 0, False
    while child_process.poll() is None:
        with suppress(OSError):  # it just exited
            peak = max(peak, memory_mb(child_process.pid).get("VmHWM", 0.0))
        done = next((int(x.split()[1]) for x in reversed(lines) if x.startswith("progress")), 0)
        progress.update(task, completed=done)
        if time.perf_counter() - started > max_seconds:
            timed_out = True
            child_process.kill()  # our own child, by its handle
            break
        time.sleep(0.05)
    child_process.wait()
    reader.join(5)
    elapsed = time.perf_counter() - started
    progress.remove_task(task)
    results = [json.loads(x[7:]) for x in lines if x.startswith("result ")]
    row = {"rows": spec["rows"], "chunk_rows": spec["chunk_rows"],
           "load_before": round(load_before, 2),
           "load_after": round(os.getloadavg()[0], 2)}  # fmt: skip
    if results and not timed_out:
        r = results[0]
        return {**row, "seconds": r["seconds"], "rows_per_s": round(spec["rows"] / r["seconds"]),
                "peak_rss_mb": r["peak_rss_mb"], "rss_before_mb": r["rss_before_mb"],
                "timed_out": False, "stages": r["stages"]}  # fmt: skip
    done = next((int(x.split()[1]) for x in reversed(lines) if x.startswith("progress")), 0)
    return {**row, "seconds": None, "timed_out": timed_out, "gave_up_after_s": round(elapsed, 1),
            "rows_done": done, "rows_per_s": round(done / elapsed) if done else None,
            "peak_rss_mb": peak, "exit_code": child_process.returncode}  # fmt: skip


# In-process: the small case under the stage timers, and the checks.


def brute_force(rows: pl.DataFrame, root: str, view: FeatureView) -> pl.DataFrame:
    """``view``'s count/min/max/last features by joining each row to its card's raw events
    and filtering to its window (no tiles, no engine code); named ``view__feature``."""
    values = sorted({f.column for f in view.features})
    events = (
        pl.scan_parquet(f"{root}/{SUBJECT}/**/*.parquet", hive_partitioning=True)
        .select("card_id", pl.col("ts").dt.epoch("ms").alias("__e"), "_offset", *values)
        .collect()
    )
    probe = rows.with_row_index("__r").select(
        "__r", "card_id", pl.col(AT).dt.epoch("ms").alias("__t")
    )
    joined = probe.join(events, on="card_id", how="left").sort("__r", "__e", "_offset")
    exprs = []
    for f in view.features:
        inside = pl.col("__e").is_between(f.window.start_expr(pl.col("__t")), pl.col("__t"))
        v = pl.col(f.column).filter(inside)
        agg = {"count": v.count().cast(pl.Int64), "min": v.min(), "max": v.max(),
               "last": v.drop_nulls().last()}[f.function]  # fmt: skip
        exprs.append(agg.alias(f"{view.name}__{f.name}"))
    return joined.group_by("__r", maintain_order=True).agg(exprs).sort("__r").drop("__r")


def profile_small(rows: pl.DataFrame, root: str, console: Console) -> dict[str, Any]:
    """The small case in this process under the stage timers (the first run: cold file
    cache and imports); then the checks: another chunking, the input order, a brute
    force of the velocity view."""
    all_views = {v.name: v for v in views()}
    kwargs: dict[str, Any] = {"views": all_views, "join_keys": JOIN_KEYS, "offline_root": root,
                              "full_feature_names": True}  # fmt: skip
    stages = Stages()
    console.print(f"{rows.height:,} rows in-process: stage timers, then the checks ...")
    started = time.perf_counter()
    with timed_stages(stages):
        got = history_module.get_historical_features(rows, feature_refs(), **kwargs)
    seconds = time.perf_counter() - started
    chunk = min(CHECK_CHUNK, max(rows.height // 3, 1))
    started = time.perf_counter()
    regrouped = history_module.get_historical_features(rows, feature_refs(), chunk_rows=chunk,
                                                       **kwargs)  # fmt: skip
    chunked_s = time.perf_counter() - started
    problems = []
    try:
        assert_frame_equal(got, regrouped, check_exact=True)
    except AssertionError as exc:
        problems.append(f"chunk_rows {chunk:,} != 200,000: {str(exc).splitlines()[0]}")
    if not got.select(rows.columns).equals(rows):
        problems.append("the rows did not come back in input order")
    velocity = all_views["card_velocity"]
    expected = brute_force(rows, root, velocity)
    try:
        assert_frame_equal(got.select(expected.columns), expected, check_exact=True)
    except AssertionError as exc:
        problems.append(f"card_velocity != brute force: {str(exc).splitlines()[0]}")
    nulls = got.select(pl.all().null_count()).row(0)
    checks = [f"chunk_rows {chunk:,} == chunk_rows 200,000 (all 50 features, exact)",
              "rows in input order", f"{len(expected.columns)} card_velocity features == brute "
              "force over the raw events (exact)"]  # fmt: skip
    return {
        "rows": rows.height, "seconds": round(seconds, 2), "stages": stage_table(stages, seconds),
        "check_chunk_rows": chunk, "check_chunked_s":
        round(chunked_s, 2), "checks": checks, "ok": not problems, "problems": problems,
        "non_null_values": int(got.height * got.width - sum(nulls)),
    }  # fmt: skip


# Report.


def case_cells(c: dict[str, Any]) -> list[str]:
    seconds = f"{c['seconds']:.2f}" if not c["timed_out"] else "gave up at "
    if c["timed_out"]:
        seconds += f"{c['gave_up_after_s']:.0f} ({c['rows_done']:,} rows done)"
    rate = f"{c['rows_per_s']:,}" if c.get("rows_per_s") else "-"
    before = f"{c['rss_before_mb']:,.0f}" if "rss_before_mb" in c else "-"
    load = f"{c['load_before']} / {c['load_after']}"
    return [f"{c['rows']:,}", f"{c['chunk_rows']:,}", seconds, rate,
            f"{c['peak_rss_mb']:,.0f}", before, load]  # fmt: skip


CASE_HEAD = ["rows", "chunk rows", "seconds", "rows/s", "peak RSS MB", "RSS before MB",
             "load 1m before / after"]  # fmt: skip


def stage_runs(report: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(label, stage rows): the small case in-process, then each large case."""
    prof = report["profile"]
    out = [(f"{prof['rows']:,} rows, in-process, first run ({prof['seconds']} s)",
            prof["stages"])]  # fmt: skip
    for c in report["cases"]:
        if c.get("stages") and c["rows"] == report["large"]:
            out.append((f"{c['rows']:,} rows, chunks of {c['chunk_rows']:,}, child process "
                        f"({c['seconds']} s)", c["stages"]))  # fmt: skip
    return out


def check_line(prof: dict[str, Any]) -> str:
    if prof["ok"]:
        return f"Checks on the {prof['rows']:,} rows passed: " + "; ".join(prof["checks"]) + "."
    return "Checks FAILED: " + "; ".join(prof["problems"])


def verdicts(report: dict[str, Any]) -> list[str]:
    """One line per target."""
    out, history_mb = [], report["history"]["estimated_mb"]
    small = [c for c in report["cases"] if c["rows"] == report["small"] and not c["timed_out"]]
    if small:
        best = min(c["seconds"] for c in small)
        out.append(f"{report['small']:,} rows x 50 features best {best:.2f} s = "
                   f"{best / FEAST_10K_S:.1f}x Feast's {FEAST_10K_S} s")  # fmt: skip
    for c in report["cases"]:
        if c["rows"] != report["large"]:
            continue
        verdict = "MISSED (gave up)"
        if not c["timed_out"]:
            verdict = "met" if c["seconds"] <= TARGET_S else "MISSED"
        rate = c.get("rows_per_s")
        eta = f", ~{report['large'] / rate:,.0f} s at that rate" if rate and c["timed_out"] else ""
        out.append(f"{report['large']:,} rows (chunks {c['chunk_rows']:,}) target "
                   f"< {TARGET_S:.0f} s {verdict}{eta}; peak RSS {c['peak_rss_mb']:,.0f} MB vs "
                   f"whole history {history_mb:,.0f} MB in memory")  # fmt: skip
    return out


def markdown(report: dict[str, Any], argv: str) -> str:
    info, h, prof = report["machine"], report["history"], report["profile"]
    command = " ".join([".venv/bin/python bench/offline.py", argv]).strip()
    lines = [
        f"# Point-in-time retrieval ({report['date'][:10]})\n",
        f"`{command}` on {info['cpu']}, {info['cores']} cores, "
        f"{info['memory_gb']} GB; Python {info['python']}, polars "
        f"{info['versions'].get('polars')}, pyarrow {info['versions'].get('pyarrow')}. "
        f"History: {h['events']:,} payments of {h['cards']:,} cards over {h['days']:g} days, "
        f"{h['files']} Parquet files, {h['disk_mb']:,.0f} MB on disk, "
        f"{h['estimated_mb']:,.0f} MB in memory (`estimated_size`, all columns; "
        f"{h['estimated_mb_view_columns']:,.0f} MB for the columns the views read). 50 "
        f"features (5 views x 10). Baseline: a process that imported polars, RSS "
        f"{report['baseline_rss_mb']['VmHWM']:,.0f} MB. The machine is shared: load average "
        "beside each case. Shipped code measured (sha256): "
        + ", ".join(f"`{f.split('/')[-1]}` {digest}" for f, digest in info["shipped_code"].items())
        + (" (CHANGED during the run)" if report["shipped_code_changed_during_run"] else "")
        + ".\n",
        "| " + " | ".join(CASE_HEAD) + " |", "|" + "---|" * len(CASE_HEAD),
        *["| " + " | ".join(case_cells(c)) + " |" for c in report["cases"]], "",
        check_line(prof) + "\n",
        "Where the time goes (stage timers around the shipped functions; nested stages start "
        "with -):\n",
    ]  # fmt: skip
    for label, stages in stage_runs(report):
        lines += [f"{label}:\n", "| stage | calls | seconds | % |", "|---|---|---|---|",
                  *[f"| {s['stage'].strip()} | {s['calls'] or '-'} | {s['seconds']:.2f} | "
                    f"{s['pct']:.0f} |" for s in stages], ""]  # fmt: skip
    lines += [*[f"- {line}" for line in verdicts(report)]]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--cards", type=int, default=100_000, help="cards with a history (100000)")
    add("--days", type=float, default=7.0, help="days of history (7)")
    add("--per-day", type=float, default=5.0, help="median payments per card per day (5)")
    add("--write-batch", type=int, default=100_000, help="events per EventWriter.write (100000)")
    add("--small", type=int, default=10_000, help="rows of the small case (10000)")
    add("--large", type=int, default=1_000_000, help="rows of the large case (1000000)")
    add("--chunks", default="200000,50000", help="chunk_rows for the large case (200000,50000)")
    add("--repeat", type=int, default=2, help="runs of each small case (2)")
    add("--max-seconds", type=float, default=240.0,
        help="give a case up after this long; its rate comes from the rows done (240)")  # fmt: skip
    add("--quick", action="store_true",
        help="a short run: 20000 cards, 3 days, 100000 large rows, --max-seconds 60")  # fmt: skip
    add("--out", type=Path, default=RESULTS, help=f"JSON results ({RESULTS}); .md beside it")
    add("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.cards, args.days, args.large, args.max_seconds = 20_000, 3.0, 100_000, 60.0
    return args


def setup(args: argparse.Namespace, root: str, console: Console) -> dict[str, Any]:
    """Write the history; its sizes on disk and in memory."""
    started = time.perf_counter()
    events = history(args.cards, args.days, args.per_day)
    made = time.perf_counter() - started
    columns = sorted({"card_id", "ts", "_offset", *(f.column for v in views() for f in v.features)})
    span = events.select(pl.col("ts").dt.epoch("ms").min().alias("lo"),
                         pl.col("ts").dt.epoch("ms").max().alias("hi")).row(0)  # fmt: skip
    out = {"events": events.height, "cards": args.cards, "days": args.days,
           "per_day": args.per_day, "made_s": round(made, 1), "span_ms": list(span),
           "estimated_mb": round(events.estimated_size() / 2**20, 1),
           "estimated_mb_view_columns": round(
               events.select(columns).estimated_size() / 2**20, 1)}  # fmt: skip
    writer, started = EventWriter(root, SUBJECT, "ts"), time.perf_counter()
    with Progress(*progress_columns(), transient=True) as progress:
        task = progress.add_task("writing the history", total=events.height)
        for part in events.iter_slices(args.write_batch):
            writer.write(part)
            progress.advance(task, part.height)
    out["write_s"] = round(time.perf_counter() - started, 1)
    files = list((Path(root) / SUBJECT).rglob("*.parquet"))
    out |= {"files": len(files), "disk_mb": round(sum(f.stat().st_size for f in files) / 2**20, 1)}
    del events
    gc.collect()
    console.print(f"history: {out['events']:,} payments of {args.cards:,} cards over {args.days:g} "
                  f"days, made in {made:.1f} s, written in {out['write_s']} s: {out['files']} "
                  f"files, {out['disk_mb']:,.0f} MB on disk; in memory "
                  f"{out['estimated_mb']:,.0f} MB ({out['estimated_mb_view_columns']:,.0f} MB the "
                  "views' columns)")  # fmt: skip
    return out


def code_version() -> dict[str, str]:
    """sha256 (12 hex) of the shipped files measured."""
    files = ("featurestore/offline/history.py", "featurestore/offline/events.py",
             "featurestore/features/point_in_time.py", "featurestore/features/aggregates.py",
             "featurestore/features/sketch.py")  # fmt: skip
    return {f: hashlib.sha256((ROOT / f).read_bytes()).hexdigest()[:12] for f in files}


def progress_columns() -> list[Any]:
    return [*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeRemainingColumn()]


def measure(args: argparse.Namespace, root: str, console: Console) -> dict[str, Any]:
    info = describe(("polars", "pyarrow", "numpy", "pydantic"), shipped_code=code_version())
    console.print(f"{info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB; Python "
                  f"{info['python']}; versions: {info['versions']}")  # fmt: skip
    past = setup(args, root, console)
    base = {"root": root, "cards": args.cards, "span": past["span_ms"], "seed": 11}
    profile = profile_small(entity_rows(args.small, args.cards, past["span_ms"], 11), root, console)
    console.print(check_line(profile))
    baseline = baseline_rss()
    console.print(f"baseline (imported polars): RSS {baseline['VmHWM']:,.0f} MB")
    specs = [{**base, "rows": args.small, "chunk_rows": 200_000} for _ in range(args.repeat)]
    specs += [{**base, "rows": args.large, "chunk_rows": int(c)} for c in args.chunks.split(",")]
    cases = []
    with Progress(*progress_columns(), transient=True) as progress:
        for spec in specs:
            cases.append(run_case(spec, args.max_seconds, progress))
            console.print(" | ".join(case_cells(cases[-1])))
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": info,
            "history": past, "features": len(feature_refs()),
            "views": {v.name: [f.name for f in v.features] for v in views()},
            "small": args.small, "large": args.large, "max_seconds": args.max_seconds,
            "baseline_rss_mb": baseline, "cases": cases, "profile": profile}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    console = Console(width=None if sys.stdout.isatty() else 130)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fs-bench-offline-") as root:
        report = measure(args, root, console)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    report["shipped_code_changed_during_run"] = code_version() != report["machine"]["shipped_code"]
    summary = markdown(report, " ".join(argv if argv is not None else sys.argv[1:]))
    print("\n" + summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(summary)
    console.print(f"wrote {args.out} and {args.out.with_suffix('.md')} "
                  f"(whole run {report['wall_s']} s)")  # fmt: skip
    return 0 if report["profile"]["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

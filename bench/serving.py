"""The HTTP feature server under concurrent load from a separate process, beside its floor and
the in-process client, in one run.

setup: Redis and the card data of bench/online.py (5 views x 10 features, --cards cards with
--days of payment history ending now, applied with `store.apply` under a key prefix of this run,
deleted at the end). The server is the real `featurestore.serving.server.create_app` (FastAPI,
uvicorn with uvloop and httptools, --workers processes) with an `AsyncFeatureClient` on the
wall clock, run by `python -m uvicorn --factory serving:make_app --app-dir bench`; this
bench's factory adds one route, GET /floor, a constant small dict through the app's default
(orjson) response class: the same stack, middleware and all, without a lookup. The load
generator is another process: --concurrency HTTP/1.1 keep-alive connections on asyncio
streams (uvloop), each sending precomputed requests back to back and timing each with
perf_counter; the connections are spread evenly over the workers (reconnecting until they are;
the kernel hands a new connection to whichever worker accepts first).

Rounds run every kind for --seconds, in a shuffled order, so noise hits all alike:
  floor           GET /floor
  http 1          POST /features, 1 card x 50 features (full feature names: two names repeat)
  http 100        the same with 100 cards
  in-process 1    the same lookups through the sync `FeatureClient.get_online_features`, in
  in-process 100  this process, alone (the load generator and server idle), one after another
Cards are drawn in proportion to their payments (a lookup scores a payment), each request
from a pool of distinct ones. Per kind: latency p50 / p90 / p99 / mean, requests/s (completed
/ seconds of the kind over the rounds) and CPU ms per request of the server processes, Redis
and the client (the load generator, or this process in-process). Target: http 1 p99 <=
2 x floor p99 + in-process 1 p99; the same sum for 100 cards is information. After the
rounds: a few HTTP answers against the in-process client's for the same cards and time.

The machine is shared and noisy: compare within one run.

    .venv/bin/python bench/serving.py [--quick] [--redis URL] [--workers W] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import math
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from machine import describe  # bench/machine.py: this folder is on sys.path
from online import MINUTE_MS, cleanup, history, load, lookup_sets, progress_bar, redis_url, table
from online import views as bench_views
from rich.console import Console

from featurestore.online import RedisOnlineStore, connect, connect_async, redact_url
from featurestore.serving import AsyncFeatureClient, Catalog, FeatureClient
from featurestore.serving.client import timeouts
from featurestore.serving.server import ServerOptions, create_app, worker_environment

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "serving.json"
HOST, JOIN_KEYS = "127.0.0.1", {"card": ["card_id"]}
ENV_URL, ENV_PREFIX = "FS_BENCH_SERVING_REDIS_URL", "FS_BENCH_SERVING_PREFIX"
HTTP_KINDS, LOCAL_KINDS = ("floor", "http 1", "http 100"), ("in-process 1", "in-process 100")
KINDS = (*HTTP_KINDS, *LOCAL_KINDS)
POOL = {1: 2_000, 100: 200}  # distinct requests per size
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def catalog(prefix: str) -> Catalog:
    return Catalog(bench_views(), JOIN_KEYS, prefix=prefix)


def make_app() -> Any:
    """The app of every uvicorn worker: the product's server, plus GET /floor."""
    url, prefix = os.environ[ENV_URL], os.environ[ENV_PREFIX]
    served = catalog(prefix)

    def connect_client() -> AsyncFeatureClient:
        return AsyncFeatureClient(served, connect_async(url, **timeouts()))

    app = create_app(connect_client, ServerOptions(name="bench-serving"))
    constant = {"status": "ok", "worker": os.getpid()}

    @app.get("/floor", include_in_schema=False)
    async def floor() -> Any:
        return constant

    return app


# --- the load generator (its own process) -------------------------------------------------


async def exchange(reader: Any, writer: Any, request: bytes) -> tuple[int, bytes]:
    """One request on a keep-alive connection: (status, body)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    at = head.lower().find(b"\r\ncontent-length:")
    if at < 0:
        raise ConnectionError(f"no Content-Length in {head[:200]!r}")
    length = int(head[at + 17 : head.index(b"\r\n", at + 2)])
    return int(head[9:12]), await reader.readexactly(length)


async def balanced(port: int, workers: int, concurrency: int, floor: bytes) -> tuple[list, int]:
    """``concurrency`` connections, at most ceil(C / W) on any worker (reconnecting, up to 30
    times): [(reader, writer, worker pid)], and the connections opened."""
    conns: list[tuple[Any, Any, int]] = []
    cap, opened = math.ceil(concurrency / workers), 0
    while True:
        while len(conns) < concurrency:
            reader, writer = await asyncio.open_connection(HOST, port)
            opened += 1
            answer = await exchange(reader, writer, floor)
            conns.append((reader, writer, orjson.loads(answer[1])["worker"]))
        counts = Counter(pid for *_, pid in conns)
        over = [c for c in conns if counts[c[2]] > cap]
        if not over or opened >= 30:
            return conns, opened
        conns.remove(over[-1])
        over[-1][1].close()


async def drive(port: int, shape: tuple[int, int], requests: list[bytes], *, first: int,
                seconds: float, floor: bytes) -> dict[str, Any]:  # fmt: skip
    """Requests back to back on every connection for ``seconds``: the samples (ms)."""
    workers, concurrency = shape
    conns, opened = await balanced(port, workers, concurrency, floor)
    samples, errors = [array("d") for _ in conns], Counter[str]()
    cpu, began = time.process_time(), time.perf_counter()
    deadline = began + seconds

    async def run(i: int, reader: Any, writer: Any) -> None:
        n, clock = first + i, time.perf_counter
        while clock() < deadline:
            request = requests[n % len(requests)]
            n += concurrency
            started = clock()
            status, body = await exchange(reader, writer, request)
            samples[i].append((clock() - started) * 1000)
            if status != 200:
                errors[f"{status}: {body[:200].decode(errors='replace')}"] += 1

    await asyncio.gather(*(run(i, r, w) for i, (r, w, _) in enumerate(conns)))
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    for _, writer, _ in conns:
        writer.close()
    return {"ms": b"".join(s.tobytes() for s in samples), "seconds": elapsed, "cpu_s": cpu,
            "errors": dict(errors), "per_worker": sorted(Counter(p for *_, p in conns).values()),
            "opened": opened, "pids": sorted({p for *_, p in conns})}  # fmt: skip


def generator(pipe: Any, port: int, shape: tuple[int, int]) -> None:
    """The load process: gets {kind: requests}, then (kind, seconds) orders until None."""
    import uvloop

    requests: dict[str, list[bytes]] = pipe.recv()
    sent = dict.fromkeys(requests, 0)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        while (order := pipe.recv()) is not None:
            kind, seconds = order
            out = runner.run(drive(port, shape, requests[kind], first=sent[kind],
                                   seconds=seconds, floor=requests["floor"][0]))  # fmt: skip
            sent[kind] += len(out["ms"]) // 8
            pipe.send(out)


# --- the bench's own process --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(url: str, prefix: str, workers: int) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """The feature server in its own process group, ready (GET /readyz is 200)."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "serving:make_app", "--app-dir",
               str(BENCH), "--host", HOST, "--port", str(port), "--workers", str(workers),
               "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
               "--no-access-log"]  # fmt: skip
    env = {**os.environ, ENV_URL: url, ENV_PREFIX: prefix, **worker_environment(workers)}
    server = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while get(port, "/readyz")[0] != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not get ready (exit {server.poll()})")
            time.sleep(0.2)
        yield port, server
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()


def get(port: int, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body else {}
        conn.request("POST" if body else "GET", path, body, headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of a process and its children, from /proc."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == root or int(fields[1]) == root:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICK
    return total


def redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def bodies(port: int, sets: dict[int, list[list[str]]], refs: list[str]) -> dict[str, list]:
    head = f"HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
    out = {"floor": [f"GET /floor {head}\r\n".encode()]}
    for size, cards in sets.items():
        out[f"http {size}"] = []
        for chosen in cards:
            body = orjson.dumps({"entities": {"card_id": chosen}, "features": refs,
                                 "full_feature_names": True})  # fmt: skip
            head_of = f"POST /features {head}Content-Type: application/json\r\n"
            out[f"http {size}"].append(f"{head_of}Content-Length: {len(body)}\r\n\r\n".encode()
                                       + body)  # fmt: skip
    return out


def in_process(client: FeatureClient, sets: list[list[str]], refs: list[str], first: int,
               seconds: float) -> dict[str, Any]:  # fmt: skip
    gc.collect()
    samples, n, clock = array("d"), first, time.perf_counter
    cpu, began = time.process_time(), clock()
    while clock() < began + seconds:
        cards, n = sets[n % len(sets)], n + 1
        started = clock()
        client.get_online_features({"card_id": cards}, refs, full_feature_names=True)
        samples.append((clock() - started) * 1000)
    return {"ms": samples.tobytes(), "seconds": clock() - began,
            "cpu_s": time.process_time() - cpu, "errors": {}}  # fmt: skip


def rounds(
    args: argparse.Namespace,
    client: FeatureClient,
    redis: Any,
    *,
    server: int,
    pipe: Any,
    sets: dict[int, list[list[str]]],
    refs: list[str],
) -> dict[str, list[dict[str, Any]]]:
    """Warm up every kind, then the shuffled rounds: per kind, the runs' results merged."""
    rng, runs = random.Random(5), {k: [] for k in KINDS}

    def once(kind: str, seconds: float) -> dict[str, Any]:
        before = (tree_cpu(server), redis_cpu(redis))
        if kind in LOCAL_KINDS:
            size = int(kind.split()[1])
            out = in_process(client, sets[size], refs, len(runs[kind]) * 997, seconds)
        else:
            pipe.send((kind, seconds))
            out = pipe.recv()
        out["server_cpu_s"] = tree_cpu(server) - before[0]
        out["redis_cpu_s"] = redis_cpu(redis) - before[1]
        return out

    with progress_bar() as progress:
        task = progress.add_task("warming up", total=len(KINDS) * (args.rounds + 1))
        for kind in KINDS:
            once(kind, args.seconds / 2)
            progress.advance(task)
        for r in range(args.rounds):
            order = list(KINDS)
            rng.shuffle(order)
            for kind in order:
                progress.update(task, description=f"round {r + 1}/{args.rounds}: {kind}")
                runs[kind].append(once(kind, args.seconds))
                progress.advance(task)
    return runs


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ms = sorted(x for run in runs for x in array("d", run["ms"]))
    n, seconds = len(ms), sum(run["seconds"] for run in runs)

    def q(p: float) -> float:
        return round(ms[min(n - 1, max(0, math.ceil(p * n) - 1))], 3)

    errors = Counter[str]()
    for run in runs:
        errors.update(run["errors"])
    cpu = {w: round(sum(r[key] for r in runs) * 1000 / n, 3)
           for w, key in (("server", "server_cpu_s"), ("redis", "redis_cpu_s"),
                          ("client", "cpu_s"))}  # fmt: skip
    out = {"n": n, "p50": q(0.5), "p90": q(0.9), "p99": q(0.99),
           "mean": round(sum(ms) / n, 3), "max": round(ms[-1], 3), "rps": round(n / seconds, 1),
           "seconds": round(seconds, 2), "errors": dict(errors),
           "cpu_ms_per_request": cpu}  # fmt: skip
    if "per_worker" in runs[0]:
        out["connections_per_worker"] = dict(Counter(str(r["per_worker"]) for r in runs))
        out["connections_opened"] = sum(r["opened"] for r in runs)
    return out


def same(a: Any, b: Any) -> bool:
    """Equal values: floats within 1e-9 relative, NaN as null (JSON has no NaN)."""
    a, b = (None if isinstance(x, float) and math.isnan(x) else x for x in (a, b))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))
    return bool(a == b)


def check(port: int, client: FeatureClient, sets: dict[int, list[list[str]]],
          refs: list[str]) -> dict[str, Any]:  # fmt: skip
    """HTTP answers against the in-process client's for the same cards: in-process, HTTP,
    in-process again, retried while the two in-process reads differ (a window edge passed)."""
    requests, values, mismatches, retried = [*sets[1][:5], *sets[100][:2]], 0, [], 0
    for cards in requests:
        for _ in range(5):
            ours = client.get_online_features({"card_id": cards}, refs, full_feature_names=True)
            body = {"entities": {"card_id": cards}, "features": refs, "full_feature_names": True}
            status, raw = get(port, "/features", orjson.dumps(body))
            again = client.get_online_features({"card_id": cards}, refs, full_feature_names=True)
            if all(map(same, ours.values.row(i), again.values.row(i))
                   for i in range(len(cards))):  # fmt: skip
                break
            retried += 1
        if status != 200:
            mismatches.append(f"HTTP {status}: {raw[:200]!r}")
            continue
        for feature in orjson.loads(raw)["features"]:
            name = feature["name"]
            want, statuses = ours.values[name].to_list(), ours.status(name)
            values += len(want)
            for i, (got, expected) in enumerate(zip(feature["values"], want, strict=True)):
                if not same(got, expected) or feature["statuses"][i] != statuses[i]:
                    mismatches.append(f"{cards[i]} {name}: HTTP {got} ({feature['statuses'][i]})"
                                      f", in-process {expected} ({statuses[i]})")  # fmt: skip
    return {"requests": len(requests), "values": values, "retried": retried,
            "mismatches": len(mismatches), "examples": mismatches[:10]}  # fmt: skip


def verdicts(kinds: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for size in (1, 100):
        http_p99, floor, local = (kinds[k]["p99"] for k in
                                  (f"http {size}", "floor", f"in-process {size}"))  # fmt: skip
        bound = 2 * floor + local
        over = kinds[f"http {size}"]["p50"] - kinds[f"in-process {size}"]["p50"]
        out[f"http {size}"] = {"p99": http_p99, "bound": round(bound, 3), "target": size == 1,
                               "ratio": round(http_p99 / bound, 2), "met": http_p99 <= bound,
                               "p50_over_in_process": round(over, 3)}  # fmt: skip
    return out


def measure(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    prefix, started = f"bench-serving-{uuid.uuid4().hex[:8]}", time.perf_counter()
    with redis_url(args.redis) as (url, where):
        redis = connect(url)
        try:
            version = redis.info("server").get("redis_version", "?")
            packages = ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "orjson",
                        "polars", "redis", "hiredis")  # fmt: skip
            info = describe(packages, redis=f"{where} Redis {version}")
            console.print(f"{info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB; Python "
                          f"{info['python']}; {info['redis']} at {redact_url(url)}")  # fmt: skip
            console.print(f"versions: {info['versions']}")
            past, views = history(args.cards, args.days), bench_views()
            store = RedisOnlineStore(redis, JOIN_KEYS, prefix=prefix)
            for view in views:
                store.register(view, {n for n in view.values
                                      if not past.events[n].dtype.is_numeric()})  # fmt: skip
            loaded = load(store, views, past, args.batch_minutes * MINUTE_MS)
            console.print(f"history: {past.events.height:,} payments of {args.cards:,} cards, "
                          f"loaded in {loaded['seconds']} s")  # fmt: skip
            refs = [f"{v.name}:{f.name}" for v in views for f in v.features]
            sets = {size: [f["card_id"].to_list() for f in lookup_sets(past, n, size, 11 + size)]
                    for size, n in POOL.items()}  # fmt: skip
            local = FeatureClient(catalog(prefix), RedisOnlineStore(
                connect(url, **timeouts()), JOIN_KEYS, prefix))  # fmt: skip
            spawn = multiprocessing.get_context("spawn")
            with serve(url, prefix, args.workers) as (port, server):
                ours, theirs = spawn.Pipe()
                shape = (args.workers, args.concurrency)
                loader = spawn.Process(target=generator, args=(theirs, port, shape))
                loader.start()
                theirs.close()  # a dead load process: EOFError here
                try:
                    ours.send(bodies(port, sets, refs))
                    runs = rounds(
                        args, local, redis, server=server.pid, pipe=ours, sets=sets, refs=refs
                    )
                    correct = check(port, local, sets, refs)
                finally:
                    ours.send(None)
                    loader.join(30)
                    if loader.is_alive():
                        loader.terminate()
            local.close()
        finally:
            cleanup(redis, prefix)
            redis.close()
    kinds = {kind: summarise(runs[kind]) for kind in KINDS}
    return {"machine": info, "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "parameters": {k: getattr(args, k) for k in ("cards", "days", "batch_minutes",
                           "rounds", "seconds", "workers", "concurrency", "quick")},
            "distinct_requests": POOL, "features": len(refs), "load": loaded, "kinds": kinds,
            "verdicts": verdicts(kinds), "check": correct,
            "wall_s": round(time.perf_counter() - started, 1)}  # fmt: skip


def render(console: Console, report: dict[str, Any]) -> None:
    rows = []
    for kind, s in report["kinds"].items():
        cpu = s["cpu_ms_per_request"]
        rows.append([kind, str(s["n"]), *(f"{s[k]:.3f}" for k in ("p50", "p90", "p99", "mean")),
                     f"{s['max']:.1f}", f"{s['rps']:.1f}",
                     f"{cpu['server']:.2f} / {cpu['redis']:.2f} / {cpu['client']:.2f}",
                     str(sum(s["errors"].values()))])  # fmt: skip
    head = ["kind", "n", "p50", "p90", "p99", "mean", "max", "req/s",
            "CPU ms/req server / redis / client", "errors"]  # fmt: skip
    console.print(table("latency (ms), interleaved rounds", head, rows))
    for line in lines(report):
        console.print(line)


def lines(report: dict[str, Any]) -> list[str]:
    out = []
    for kind, v in report["verdicts"].items():
        size = kind.split()[1]
        what = ("PASS" if v["met"] else "MISS") if v["target"] else "information, no target"
        out.append(f"{kind} p99 {v['p99']:.2f} ms vs 2 x floor p99 + in-process {size} p99 = "
                   f"{v['bound']:.2f} ms: ratio {v['ratio']:.2f}, {what}; p50 over in-process "
                   f"{v['p50_over_in_process']:+.2f} ms")  # fmt: skip
    c = report["check"]
    out.append(f"HTTP vs in-process: {c['values']:,} values of {c['requests']} requests, "
               f"{c['mismatches']} mismatches ({c['retried']} re-read at a window edge)"
               + (f", e.g. {c['examples'][:3]}" if c["mismatches"] else ""))  # fmt: skip
    spread = {k: s["connections_per_worker"] for k, s in report["kinds"].items()
              if "connections_per_worker" in s}  # fmt: skip
    out.append(f"connections per worker, per run: {spread}")
    return out


def markdown(report: dict[str, Any], argv: str) -> str:
    info, p = report["machine"], report["parameters"]
    v = info["versions"]
    text = [f"# HTTP feature server ({report['date'][:10]})\n",
            f"`bench/serving.py {argv}` on {info['cpu']}, {info['cores']} cores, "
            f"{info['memory_gb']} GB; {info['redis']}; Python {info['python']}, FastAPI "
            f"{v['fastapi']}, uvicorn {v['uvicorn']} (uvloop {v['uvloop']}, httptools "
            f"{v['httptools']}), polars {v['polars']}. {p['cards']:,} cards, {p['days']:g} days "
            f"({report['load']['events']:,} payments); {report['features']} features of 5 views; "
            f"{p['workers']} workers, {p['concurrency']} connections from a separate process; "
            f"{p['rounds']} rounds of {p['seconds']:g} s per kind.\n",
            "| kind | n | p50 ms | p90 ms | p99 ms | mean ms | req/s | CPU ms/req server / redis"
            " / client |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for kind, s in report["kinds"].items():
        cpu = " / ".join(f"{x:.2f}" for x in s["cpu_ms_per_request"].values())
        text.append(f"| {kind} | {s['n']} | {s['p50']:.2f} | {s['p90']:.2f} | {s['p99']:.2f} | "
                    f"{s['mean']:.2f} | {s['rps']:.1f} | {cpu} |")  # fmt: skip
    return "\n".join([*text, "", *(f"- {line}" for line in lines(report))]) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--cards", type=int, default=10_000, help="cards with a history (10000)")
    add("--days", type=float, default=3.0, help="days of history, ending now (3)")
    add("--batch-minutes", type=int, default=120, help="history applied in batches of (120)")
    add("--rounds", type=int, default=5, help="interleaved rounds (5)")
    add("--seconds", type=float, default=2.0, help="seconds of each kind per round (2)")
    add("--workers", type=int, default=2, help="uvicorn worker processes (2)")
    add("--concurrency", type=int, default=2, help="load generator connections (2)")
    add("--quick", action="store_true",
        help="a ~30 s run: 2000 cards, 1 day of history, 3 rounds of 1 s")  # fmt: skip
    add("--redis", help="Redis URL; default $FEATURESTORE_REDIS_URL, else a local "
        "redis-server started (and stopped) for this run")  # fmt: skip
    add("--out", type=Path, default=RESULTS, help=f"JSON results ({RESULTS}); .md beside it")
    args = parser.parse_args(argv)
    if args.quick:
        args.cards, args.days, args.rounds, args.seconds = 2_000, 1.0, 3, 1.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    report = measure(args, console)
    render(console, report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    given = " ".join(sys.argv[1:] if argv is None else argv) or "(defaults)"
    args.out.with_suffix(".md").write_text(markdown(report, given))
    console.print(f"wrote {args.out} and {args.out.with_suffix('.md')} "
                  f"(whole run {report['wall_s']} s)")  # fmt: skip
    errors = sum(sum(s["errors"].values()) for s in report["kinds"].values())
    return 1 if errors or report["check"]["mismatches"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

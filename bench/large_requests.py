"""Large requests beside small ones on a store-backed replica (issue 14, item 5).

Run ``python bench/large_requests.py`` (about 5 minutes with the defaults; run it under
``nice -n -10`` on a shared machine). Loopback only, every phase bounded in count and time:

1. a Redis started here, ``--customers`` synthetic /score records published in it
   (``bench/scale.py``'s records: the real record shape, three reasons each);
2. per code variant (``--code NAME=PATH``, default the working tree as ``after``; a
   ``git worktree`` of an older commit as ``before``), one replica (``bentoml serve`` of the
   Patron service from that folder, the same venv) whose family is served from the store;
3. ``--rounds`` pairs of windows of ``--window`` s: an idle window, then a loaded one, each with
   1-customer ``POST /score`` at a fixed ``--rate`` requests/s, open loop (request ``i`` is due at
   ``t0 + i / rate`` and its latency counts from that due time: no coordinated omission; every
   answer checked to be the asked customer's); in the loaded window another process (another
   campaign system) sends 1 000-customer ``/score`` back to back on a connection of its own
   (each answer checked: 200 and 1 000 scores). The loaded / idle p99 ratio compares two samples
   of the same minutes;
4. the variants run one after the other, ``--repeats`` times in turn (A B A B), so a change in the
   machine's other load weighs on both; ``NAME=PATH:EXTRA`` adds folders to a variant's Python
   path (e.g. one holding ``hiredis``, redis-py's optional C parser: whether the replica found it
   is recorded);
5. with ``--in-process``, first the same windows without HTTP, on one event loop in this process
   (the service's store reads and answer assembly, no server, no second client), for three ways
   of reading: ``thread`` (the code before: small reads synchronous, large ones in a worker
   thread), ``async`` (every read awaited in steps) and ``hybrid`` (small reads synchronous, large
   ones awaited in steps: the service now).

Per window it records the load average, the share of the 2 cores that processes other than the
benchmark's own (replica, Redis, both clients) used (from /proc/stat and psutil: where that share
is large, the p99 of that window is the machine's, not the service's), and the replica's CPU
seconds (hence its CPU per 1 000-customer request, which other load does not inflate much).

Goal (issue 14, item 5): loaded p99 <= 2 x idle p99. Prints a table and writes
``bench/results/large_requests_store.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOAL_RATIO = 2.0
BIG = 1000


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# bench/scale.py: records, Redis, replicas; bench/serving.py: the keep-alive HTTP client
scale = _load("bench_scale", ROOT / "bench" / "scale.py")
client = _load("bench_serving", ROOT / "bench" / "serving.py")


# --------------------------------------------------------------------------- the large requests


def big_stream(conn: Any, port: int, body: bytes, headers: dict[str, str]) -> None:
    """(Own process) On each (start, stop) received, 1 000-customer /score back to back on one
    connection from ``start`` to ``stop`` (monotonic clock); answers counts, failures and the
    median latency. ``None`` stops it."""

    async def window(pool: Any, start: float, stop: float) -> dict[str, Any]:
        done, failed, times = 0, 0, []
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        while time.monotonic() < stop:
            t = time.monotonic()
            try:
                status, raw = await pool.post("/score", body, headers)
                # a byte count, not a parse: decoding 450 kB per answer here would load the
                # shared cores during the loaded windows only
                good = status == 200 and raw.count(b'{"customer_id":') == BIG
            except Exception:
                good = False
            times.append(time.monotonic() - t)
            done, failed = done + 1, failed + (not good)
        return {
            "big_requests": done,
            "big_failed": failed,
            "big_median_ms": round(float(np.median(times)) * 1000, 2) if times else None,
        }

    async def serve() -> None:
        pool = client.Pool("127.0.0.1", port)
        conn.send(os.getpid())
        while (job := await asyncio.to_thread(conn.recv)) is not None:
            conn.send(await window(pool, *job))
        pool.close()

    asyncio.run(serve())


# --------------------------------------------------------------------------- machine noise


def _busy_jiffies() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / hz, sum(fields) / hz


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds of these processes and their children (those still running)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                total += sum(p.cpu_times()[:2])
        except psutil.NoSuchProcess:
            continue
    return total


class Noise:
    """Per window: the load average and the CPU share other processes used."""

    def __init__(self, pids: list[int], replica: int) -> None:
        self.pids, self.replica = pids, replica

    def start(self) -> None:
        self.busy0, self.total0 = _busy_jiffies()
        self.ours0 = _cpu_s(self.pids)
        self.replica0 = _cpu_s([self.replica])

    def stop(self) -> dict[str, float]:
        busy, total = _busy_jiffies()
        ours = _cpu_s(self.pids) - self.ours0
        span = max(total - self.total0, 1e-9)
        return {
            "load_average_1m": round(os.getloadavg()[0], 2),
            "cpu_used_share": round((busy - self.busy0) / span, 3),
            "cpu_others_share": round(max(0.0, busy - self.busy0 - ours) / span, 3),
            "replica_cpu_s": round(_cpu_s([self.replica]) - self.replica0, 3),
        }


# --------------------------------------------------------------------------- small requests


async def open_loop(
    pool: Any,
    ids: list[str],
    rate: float,
    seconds: float,
    headers: dict[str, str],
    during: Any = None,
) -> dict[str, Any]:
    """1-customer /score for ids[i % n] at t0 + i / rate; latency from each due time; every
    answer checked to be the asked customer's."""
    loop = asyncio.get_running_loop()
    count = int(rate * seconds)
    t0 = loop.time() + 0.2
    lat = np.full(count, np.nan)
    ok = np.zeros(count, dtype=bool)

    async def one(i: int) -> None:
        due = t0 + i / rate
        if (delay := due - loop.time()) > 0:
            await asyncio.sleep(delay)
        cid = ids[i % len(ids)]
        body = json.dumps({"customer_ids": [cid]}).encode()
        try:
            status, raw = await pool.post("/score", body, headers)
            ok[i] = status == 200 and json.loads(raw)["scores"][0]["customer_id"] == cid
        except Exception:
            ok[i] = False
        lat[i] = (loop.time() - due) * 1000.0

    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    side = asyncio.create_task(during(t0)) if during is not None else None
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 60)
    return {"latencies": lat, "errors": int((~ok).sum()), "side": await side if side else None}


def summary(lat: np.ndarray, errors: int) -> dict[str, Any]:
    return {
        "requests": int(len(lat)),
        "errors": int(errors),
        "p50_ms": round(float(np.nanpercentile(lat, 50)), 3),
        "p90_ms": round(float(np.nanpercentile(lat, 90)), 3),
        "p99_ms": round(float(np.nanpercentile(lat, 99)), 3),
        "max_ms": round(float(np.nanmax(lat)), 3),
    }


# --------------------------------------------------------------------------- one variant


def run_variant(
    name: str,
    code: Path,
    extra: list[str],
    settings: dict[str, Any],
    args: argparse.Namespace,
    work: Path,
    pids: list[int],
    ids: dict[str, Any],
) -> dict[str, Any]:
    """One replica of the code in ``code`` (and ``extra`` folders on its path): warm-up, then
    ``--rounds`` idle / loaded pairs."""
    env_code = {"PYTHONPATH": os.pathsep.join([str(code), *extra])}
    log = work / f"replica-{name}-{time.monotonic_ns()}.log"
    proc, port, start_s, _ = start_replica(settings, work / "home", log, code, env_code)
    headers = {"Authorization": f"Bearer {scale.USER_KEY}"}
    big_body = json.dumps({"customer_ids": ids["big"]}).encode()
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    streamer = ctx.Process(target=big_stream, args=(theirs, port, big_body, headers))
    streamer.start()
    try:
        stream_pid = ours.recv()
        noise = Noise([*pids, proc.pid, stream_pid], proc.pid)

        async def run() -> dict[str, Any]:
            pool = client.Pool("127.0.0.1", port)
            await open_loop(pool, ids["small"], 100.0, 2.0, headers)  # warm-up
            status, raw = await pool.post("/score", big_body, headers)  # warm-up, checked
            assert status == 200 and len(json.loads(raw)["scores"]) == BIG, status

            async def bigs(t0: float) -> dict[str, Any]:
                # the event loop's clock is time.monotonic: shared with the other process
                ours.send((t0, t0 + args.window))
                out: dict[str, Any] = await asyncio.to_thread(ours.recv)
                return out

            rounds = []
            for _ in range(args.rounds):
                noise.start()
                idle = await open_loop(pool, ids["small"], args.rate, args.window, headers)
                idle_noise = noise.stop()
                noise.start()
                loaded = await open_loop(
                    pool, ids["small"], args.rate, args.window, headers, during=bigs
                )
                loaded_noise = noise.stop()
                rounds.append((idle, idle_noise, loaded, loaded_noise))
            pool.close()
            return {"rounds": rounds}

        measured = asyncio.run(run())
    finally:
        ours.send(None)
        streamer.join(timeout=30)
        if streamer.is_alive():
            streamer.terminate()
        scale.stop(proc)
    rounds = []
    for idle, idle_noise, loaded, loaded_noise in measured["rounds"]:
        i, b = (
            summary(idle["latencies"], idle["errors"]),
            summary(loaded["latencies"], loaded["errors"]),
        )
        rounds.append(
            {
                "idle": {**i, **idle_noise},
                "loaded": {**b, **loaded_noise, **(loaded["side"] or {})},
                "p99_ratio": round(b["p99_ms"] / max(i["p99_ms"], 1e-9), 3),
            }
        )
    idle_lat = np.concatenate([r[0]["latencies"] for r in measured["rounds"]])
    big_lat = np.concatenate([r[2]["latencies"] for r in measured["rounds"]])
    idle_all = summary(idle_lat, sum(r[0]["errors"] for r in measured["rounds"]))
    big_all = summary(big_lat, sum(r[2]["errors"] for r in measured["rounds"]))
    return {
        "variant": name,
        "code": str(code),
        "pythonpath_extra": extra,
        "hiredis": _has_hiredis(env_code["PYTHONPATH"]),
        "start_s": round(start_s, 2),
        "idle": idle_all,
        "loaded": {
            **big_all,
            "big_requests": sum(r["loaded"].get("big_requests", 0) for r in rounds),
            "big_failed": sum(r["loaded"].get("big_failed", 0) for r in rounds),
            "big_median_ms": float(
                np.median(
                    [
                        r["loaded"]["big_median_ms"]
                        for r in rounds
                        if r["loaded"].get("big_median_ms")
                    ]
                )
            ),
        },
        # the replica's CPU per 1 000-customer request (loaded windows less the idle ones'
        # small-request CPU): what a large request costs the replica, whatever the machine does
        "replica_cpu_ms_per_big_request": round(
            1000
            * sum(r["loaded"]["replica_cpu_s"] - r["idle"]["replica_cpu_s"] for r in rounds)
            / max(1, sum(r["loaded"].get("big_requests", 0) for r in rounds)),
            2,
        ),
        "p99_ratio": round(big_all["p99_ms"] / max(idle_all["p99_ms"], 1e-9), 3),
        "p50_ratio": round(big_all["p50_ms"] / max(idle_all["p50_ms"], 1e-9), 3),
        "rounds": rounds,
    }


def _has_hiredis(pythonpath: str) -> bool:
    """Whether redis-py finds hiredis (its C reply parser) with this path, as the replica."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", "from redis.utils import HIREDIS_AVAILABLE as h; print(h)"],
        env={**os.environ, "PYTHONPATH": pythonpath},
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip() == "True"


def start_replica(
    settings: dict[str, Any], home: Path, log: Path, code: Path, extra_env: dict[str, str]
) -> tuple[Any, int, float, float]:
    """bench/scale.py's replica, from the code folder ``code`` (cwd and PYTHONPATH)."""
    saved = dict(os.environ)
    os.environ.update(extra_env)
    root = scale.ROOT
    try:
        scale.ROOT = code
        return scale.start_replica(settings, home, log)
    finally:
        scale.ROOT = root
        os.environ.clear()
        os.environ.update(saved)


# --------------------------------------------------------------------------- in process


async def _serve_alone(strategy: str, store: Any, ids: list[str], inline_max: int) -> bytes:
    """One /score answer of the store family as the service makes it, by ``strategy``:
    ``thread`` = the code before this change (small requests read synchronously on the loop,
    large ones in a worker thread, then spliced); ``async`` = every read awaited in steps;
    ``hybrid`` = small requests read synchronously, large ones awaited in steps (the service)."""
    from serving.answers import score_answer
    from serving.online import fetch_from_store, score_bytes_from_store, unknown_entries

    if strategy == "thread":
        if len(ids) <= inline_max:
            head, raws = fetch_from_store(store, scale.FAMILY, ids, 10_000)
        else:
            head, raws = await asyncio.to_thread(fetch_from_store, store, scale.FAMILY, ids, 10_000)
        found = [r for r in raws if r is not None]
        return score_answer(head, [b",".join(found)], unknown_entries(ids, raws))
    return await score_bytes_from_store(
        store, scale.FAMILY, ids, 10_000, True, inline_max if strategy == "hybrid" else 0
    )


def in_process(url: str, ids: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The same windows without HTTP, on one event loop in this process (the replica's loop,
    its Redis reads and the answer's assembly; no server, no second client): 1-customer answers
    at ``--rate`` from their due times, 1 000-customer ones back to back in the loaded windows.
    Fewer processes share the cores, so the machine's noise weighs less than over HTTP."""
    from serving.online import RedisStore

    inline_max = 32  # serving.service.INLINE_MAX_IDS

    async def run(strategy: str) -> dict[str, Any]:
        store = RedisStore(url)
        loop = asyncio.get_running_loop()
        assert len(await _serve_alone(strategy, store, ids["big"], inline_max)) > 0

        async def window(loaded: bool) -> tuple[np.ndarray, int, float]:
            count = int(args.rate * args.window)
            t0 = loop.time() + 0.05
            lat = np.full(count, np.nan)
            stop = False
            bigs = 0

            async def one(i: int) -> None:
                due = t0 + i / args.rate
                await asyncio.sleep(max(0.0, due - loop.time()))
                cid = ids["small"][i % len(ids["small"])]
                answer = await _serve_alone(strategy, store, [cid], inline_max)
                assert cid.encode() in answer
                lat[i] = (loop.time() - due) * 1000.0

            async def big() -> None:
                nonlocal bigs
                while not stop:
                    await _serve_alone(strategy, store, ids["big"], inline_max)
                    bigs += 1

            cpu = time.process_time()
            side = asyncio.create_task(big()) if loaded else None
            await asyncio.gather(*(one(i) for i in range(count)))
            stop = True
            if side is not None:
                await side
            return lat, bigs, time.process_time() - cpu

        rounds = []
        for _ in range(args.rounds):
            idle, _, _ = await window(False)
            loaded, bigs, cpu = await window(True)
            rounds.append((idle, loaded, bigs, cpu))
        idle_all = summary(np.concatenate([r[0] for r in rounds]), 0)
        loaded_all = summary(np.concatenate([r[1] for r in rounds]), 0)
        return {
            "strategy": strategy,
            "idle": idle_all,
            "loaded": {**loaded_all, "big_requests": sum(r[2] for r in rounds)},
            "p99_ratio": round(loaded_all["p99_ms"] / max(idle_all["p99_ms"], 1e-9), 3),
            "p99_ratio_per_round": [
                round(float(np.nanpercentile(r[1], 99) / np.nanpercentile(r[0], 99)), 3)
                for r in rounds
            ],
            "load_average_1m": round(os.getloadavg()[0], 2),
        }

    out = []
    for _ in range(args.repeats):
        for strategy in ("thread", "async", "hybrid"):
            out.append(asyncio.run(run(strategy)))
            r = out[-1]
            print(
                f"  in process, {strategy:>6}: idle p50/p99 {r['idle']['p50_ms']:.2f}/"
                f"{r['idle']['p99_ms']:.2f} ms, loaded {r['loaded']['p50_ms']:.2f}/"
                f"{r['loaded']['p99_ms']:.2f} ms, ratio {r['p99_ratio']:.2f} "
                f"({r['loaded']['big_requests']} large), load {r['load_average_1m']:.1f}",
                flush=True,
            )
    from redis.utils import HIREDIS_AVAILABLE

    return {"hiredis": HIREDIS_AVAILABLE, "runs": out}


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=200.0, help="1-customer requests/s")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per window")
    parser.add_argument("--rounds", type=int, default=3, help="idle / loaded pairs per variant")
    parser.add_argument("--repeats", type=int, default=2, help="times each variant runs, in turn")
    parser.add_argument(
        "--code",
        action="append",
        default=[],
        help="NAME=PATH[:EXTRA...] a code folder to serve, and folders added to its Python "
        "path (repeatable; default after=<this tree>)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="also the same windows without HTTP on one event loop, per strategy",
    )
    parser.add_argument("--skip-http", action="store_true", help="the in-process phase only")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "large_requests_store.json"
    )
    args = parser.parse_args()
    variants = [tuple(c.split("=", 1)) for c in args.code] or [("after", str(ROOT))]
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="patron-large-"))
    (work / "home").mkdir()
    port = scale.free_port()
    redis_proc = scale.start_redis(port, work)
    runs: list[dict[str, Any]] = []
    try:
        import redis

        from serving.online import RedisStore

        url = f"redis://127.0.0.1:{port}/0"
        redis.Redis(port=port).flushdb()
        started = time.perf_counter()
        RedisStore(url).publish(
            scale.FAMILY, scale.meta(args.customers), scale.records(args.customers)
        )
        print(f"published {args.customers:,} records in {time.perf_counter() - started:.1f} s")
        rng = np.random.default_rng(5)
        ids = {
            "small": [scale.customer_id(int(i)) for i in rng.integers(0, args.customers, 4000)],
            "big": [
                scale.customer_id(int(i)) for i in rng.choice(args.customers, BIG, replace=False)
            ],
        }
        settings = {
            "models": {scale.FAMILY: {"registered_model": "scale-bench", "dataset": "synthetic"}},
            "online_store": {"url": url, "families": [scale.FAMILY]},
            "reload_interval_s": 0,
            "home": str(work / "home"),
        }
        pids = [os.getpid(), redis_proc.pid]
        inproc = in_process(url, ids, args) if args.in_process else None
        for repeat in range(0 if args.skip_http else args.repeats):
            for name, path in variants:
                print(
                    f"repeat {repeat + 1}/{args.repeats}, {name} ({path}): {args.rounds} x "
                    f"({args.window:.0f} s idle + {args.window:.0f} s with 1 000-customer "
                    f"requests) at {args.rate:.0f} req/s ...",
                    flush=True,
                )
                code, *extra = path.split(os.pathsep)
                out = run_variant(name, Path(code), extra, settings, args, work, pids, ids)
                out["repeat"] = repeat + 1
                runs.append(out)
                print(
                    f"  idle p99 {out['idle']['p99_ms']:.2f} ms, loaded p99 "
                    f"{out['loaded']['p99_ms']:.2f} ms, ratio {out['p99_ratio']:.2f} "
                    f"(rounds {[r['p99_ratio'] for r in out['rounds']]})",
                    flush=True,
                )
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    by_variant: dict[str, Any] = {}
    for name, _ in variants:
        mine = [r for r in runs if r["variant"] == name]
        ratios = [x["p99_ratio"] for r in mine for x in r["rounds"]]
        by_variant[name] = {
            "p99_ratio_per_run": [r["p99_ratio"] for r in mine],
            "p99_ratio_per_round": ratios,
            "p99_ratio_median_of_rounds": round(float(np.median(ratios)), 3),
            "idle_p99_ms_per_run": [r["idle"]["p99_ms"] for r in mine],
            "loaded_p99_ms_per_run": [r["loaded"]["p99_ms"] for r in mine],
            "big_requests": sum(r["loaded"]["big_requests"] for r in mine),
            "errors": sum(r["idle"]["errors"] + r["loaded"]["errors"] for r in mine),
            "big_failed": sum(r["loaded"]["big_failed"] for r in mine),
        }
    result = {
        "goal": f"loaded p99 <= {GOAL_RATIO} x idle p99 (1-customer /score, store-backed)",
        "variants": by_variant,
        "runs": runs,
        "in_process": inproc,
        "customers": args.customers,
        "rate_rps": args.rate,
        "window_s": args.window,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "load_average_at_start": [round(x, 2) for x in load_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "nice": os.nice(0),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "command": "python bench/large_requests.py " + " ".join(sys.argv[1:]),
    }
    print()
    head = (
        f"{'variant':>8} {'run':>3} {'idle p50/p99 ms':>16} {'loaded p50/p99 ms':>18} "
        f"{'p99 ratio':>9} {'per round':>18} {'big req':>7} {'big ms':>7} {'others CPU':>10} "
        f"{'load':>5} {'err':>4}"
    )
    print(head)
    for r in runs:
        others = np.mean(
            [x[k]["cpu_others_share"] for x in r["rounds"] for k in ("idle", "loaded")]
        )
        load = np.mean([x[k]["load_average_1m"] for x in r["rounds"] for k in ("idle", "loaded")])
        per_round = ",".join(f"{x['p99_ratio']:.1f}" for x in r["rounds"])
        print(
            f"{r['variant']:>8} {r['repeat']:>3} "
            f"{r['idle']['p50_ms']:>7.2f}/{r['idle']['p99_ms']:<8.2f} "
            f"{r['loaded']['p50_ms']:>8.2f}/{r['loaded']['p99_ms']:<9.2f} "
            f"{r['p99_ratio']:>9.2f} "
            f"{per_round:>18} "
            f"{r['loaded']['big_requests']:>7} {r['loaded']['big_median_ms']:>7.1f} "
            f"{r['replica_cpu_ms_per_big_request']:>10.1f} "
            f"{others:>10.0%} {load:>5.1f} "
            f"{r['idle']['errors'] + r['loaded']['errors'] + r['loaded']['big_failed']:>4}"
        )
    print(f"load average at start {load_start}, at end {os.getloadavg()}; nice {os.nice(0)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

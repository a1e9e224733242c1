"""Serving benchmark: open-loop latency, big-request overhead against in-process work, a live swap.

Run ``python bench/serving.py`` (about 2 minutes plus the set-up). Loopback only, every phase
bounded in time:

1. 1-customer ``POST /score`` at a fixed 200 requests/s for 30 s, open loop: request ``i`` is due
   at ``t0 + i / rate`` whatever the previous answers did, and its latency counts from that due
   time (so a stalled server cannot hide its queue: no coordinated omission);
2. a 1 000-customer ``POST /score`` over HTTP against the same work done in this process
   (the service's own path: lookup of the scores and reasons computed at load, JSON encoding in
   slices; and, beside it, the live path: feature lookup, predict, percentiles, SHAP reasons);
3. a champion swap (new registry version + ``POST /admin/reload``) in the middle of an open-loop
   run, counting failed requests;
4. (issue 14 item 5) 1-customer ``/score`` at the same rate while 1 000-customer requests run back
   to back on a connection of their own, in ``--pair-rounds`` windows of ``--pair-seconds`` that
   alternate with idle windows of the same length: the ratio is loaded p99 / idle p99 over the
   same minutes, so load from other work on a shared machine weighs on both sides alike.

The client is a minimal keep-alive HTTP/1.1 client on asyncio streams (cheaper per request than
httpx, so the client disturbs the shared 2 cores less). With ``--home`` the state folder's trained
churn champion is used; otherwise synthetic data is generated, ingested and trained in a temporary
folder. Prints a table and writes ``bench/results/serving.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import multiprocessing
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NAME = "serving-bench"
USER_KEY = "bench-user-key"
ADMIN_KEY = "bench-admin-key"
GOALS = {
    "p99_ms_1_customer_200rps": 10.0,
    "ratio_1000_to_inprocess": 2.0,
    "p99_ratio_under_big_requests": 2.0,
}


# --------------------------------------------------------------------------- a small HTTP client


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        head = [
            f"POST {path} HTTP/1.1",
            "Host: 127.0.0.1",
            f"Content-Length: {len(body)}",
            "Content-Type: application/json",
        ]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("closed by the server before answering")
        status = int(status_line.split()[1])
        length, chunked = None, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            key, _, value = line.decode("latin-1").partition(":")
            key = key.strip().lower()
            if key == "content-length":
                length = int(value)
            elif key == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readline()
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
            return status, b"".join(parts)
        return status, await self.reader.readexactly(length or 0)

    def close(self) -> None:
        self.writer.close()


class Pool:
    """Idle connections reused; a new one opened when all are busy."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[Connection] = []

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        reused = bool(self.idle)
        conn = self.idle.pop() if reused else await Connection.open(self.host, self.port)
        try:
            out = await conn.post(path, body, headers)
        except ConnectionResetError:
            conn.close()
            if not reused:
                raise
            # an idle keep-alive connection the server had closed: retry once on a new one
            conn = await Connection.open(self.host, self.port)
            out = await conn.post(path, body, headers)
        except Exception:
            conn.close()
            raise
        self.idle.append(conn)
        return out

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


async def open_loop(
    pool: Pool,
    bodies: list[bytes],
    rate: float,
    seconds: float,
    headers: dict[str, str],
    during: Any = None,
) -> dict[str, Any]:
    """Send bodies[i % n] at t0 + i / rate for ``seconds``; latency from each due time."""
    loop = asyncio.get_running_loop()
    n = int(rate * seconds)
    t0 = loop.time() + 0.2
    latencies = np.full(n, np.nan)
    statuses = np.zeros(n, dtype=int)
    versions: list[str] = [""] * n

    async def one(i: int) -> None:
        due = t0 + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            status, body = await pool.post("/score", bodies[i % len(bodies)], headers)
            statuses[i] = status
            if status == 200 and during is not None:
                versions[i] = json.loads(body).get("version", "")
        except Exception:
            statuses[i] = -1
        latencies[i] = (loop.time() - due) * 1000.0

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    side = asyncio.create_task(during(t0)) if during is not None else None
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 60)
    side_result = await side if side is not None else None
    wall = loop.time() - t0
    ok = statuses == 200
    return {
        "requests": n,
        "errors": int((~ok).sum()),
        "achieved_rps": n / wall,
        "p50_ms": float(np.nanpercentile(latencies, 50)),
        "p90_ms": float(np.nanpercentile(latencies, 90)),
        "p99_ms": float(np.nanpercentile(latencies, 99)),
        "max_ms": float(np.nanmax(latencies)),
        "versions": versions,
        "side": side_result,
        "latencies": latencies,
    }


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Open-loop runs taken together: percentiles over all their requests."""
    lat = np.concatenate([r["latencies"] for r in runs])
    sides = [r["side"] for r in runs if r["side"]]
    out: dict[str, Any] = {
        "requests": int(sum(r["requests"] for r in runs)),
        "errors": int(sum(r["errors"] for r in runs)),
        "p50_ms": float(np.nanpercentile(lat, 50)),
        "p90_ms": float(np.nanpercentile(lat, 90)),
        "p99_ms": float(np.nanpercentile(lat, 99)),
        "max_ms": float(np.nanmax(lat)),
    }
    if sides:
        out["side"] = {k: sum(s[k] for s in sides) for k in sides[0]}
    return out


# --------------------------------------------------------------------------- set-up


def prepare_state(home: Path | None, customers: int, work: Path) -> tuple[Any, str, dict]:
    """(state, model URI of a trained churn model, serving settings) ready to serve."""
    from features.sources import ingest, load_dataset
    from features.store import StateDirs
    from tests.serving.conftest import ensure_snapshot, register_copy, serving_settings
    from training.config import load_experiment

    cfg = load_experiment(ROOT / "experiments" / "churn" / "synthetic.yaml")
    dataset = load_dataset(cfg.dataset)
    if home is not None:
        state = StateDirs.resolve(home)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=state.tracking_uri, registry_uri=state.tracking_uri)
        mv = client.get_model_version_by_alias(cfg.registered_model, "champion")
        model_uri = str(mv.source)
    else:
        from features.synthetic import SyntheticConfig, generate
        from training.run import run_experiment

        state = StateDirs.resolve(work / "home")
        os.environ["PATRON_HOME"] = str(state.home)
        syn = SyntheticConfig.model_validate({**dataset.synthetic, "n_customers": customers})
        print(f"set-up: generating {customers:,} customers, ingesting, training ...", flush=True)
        generate(syn, state.synthetic(dataset.name))
        ingest(dataset, state)
        model_uri = run_experiment(cfg, state).logged["model_uri"]
    ensure_snapshot(state, dataset.name, cfg.feature_set)
    register_copy(state, model_uri, NAME, ("champion",))
    pipeline = {"state": state, "cfg": cfg, "dataset": dataset}
    # polling every second: with several workers, /admin/reload reaches one and the rest follow
    settings = serving_settings(pipeline, NAME, reload_interval_s=1.0)
    return state, model_uri, settings


def start_server(
    settings: dict, state: Any, log_path: Path, workers: int
) -> tuple[subprocess.Popen, int]:
    from tests.serving.conftest import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATRON_")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    env.update(
        PATRON_HOME=str(state.home),
        PATRON_SERVING=json.dumps(settings),
        PATRON_API_KEYS=USER_KEY,
        PATRON_ADMIN_KEYS=ADMIN_KEY,
        BENTOML_CONFIG_OPTIONS=f"services.patron.workers={workers}",
    )
    from serving.lifecycle import own_bentoml_home, serve_command

    proc = subprocess.Popen(
        serve_command("127.0.0.1", port),
        env=own_bentoml_home(env, port),
        cwd=ROOT,
        stdout=open(log_path, "wb"),  # noqa: SIM115 - the file lives as long as the server
        stderr=subprocess.STDOUT,
    )
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log_path.read_text()[-3000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise TimeoutError("server not ready in 180 s")


# --------------------------------------------------------------------------- in-process reference


def inprocess_reference(
    settings: dict, state: Any, ids: list[str], repeats: int
) -> dict[str, float]:
    """Median seconds of the 1 000-customer work done in this process, two ways."""
    from serving.answers import score_answer, sliced_records
    from serving.handlers import plan_score, score_customers, score_records
    from serving.kinds import rank_stats
    from serving.schemas import ScoreResponse
    from serving.settings import ServingSettings
    from serving.state import build_state

    served_state = build_state(ServingSettings.model_validate(settings), state)
    served = served_state.models["churn"]
    base = served.base
    live_explainer = dataclasses.replace(served.explainer, top=None)  # SHAP computed per call

    def live() -> bytes:
        # lookup, predict, percentile and decile, reasons, validation + JSON encoding
        pos = base.positions(ids)
        rows = base.features.iloc[pos[pos >= 0]]
        scores = served.model.score(rows)
        at_or_below = np.searchsorted(served.sorted_scores, scores, side="right")
        n = len(served.sorted_scores)
        pct = 100.0 * at_or_below / n
        dec = np.minimum(10, 1 + (10 * (n - at_or_below)) // n)
        reasons = live_explainer.reasons(pos[pos >= 0])
        body = score_customers(served_state, "churn", ids, 10_000, with_reasons=False)
        for rec, s, p, d, r in zip(body["scores"], scores, pct, dec, reasons, strict=True):
            rec.update(
                score=float(s), probability=float(s), percentile=float(p), decile=int(d), reasons=r
            )
        return ScoreResponse.model_validate(body).model_dump_json().encode()

    def service_path() -> bytes:
        # what /score does (serving.service.Patron._score): the records encoded at load
        # joined, else made and encoded in slices
        plan = plan_score(served_state, "churn", ids, 10_000)
        if served.encoded is not None:
            parts = [served.encoded.join(plan.known)]
        else:
            parts = asyncio.run(
                sliced_records(len(plan.known), lambda a, b: score_records(served, plan.known[a:b]))
            )
        return score_answer(plan.head, parts, plan.unknown)

    assert rank_stats  # the same percentile rule as the service (serving.kinds.rank_stats)
    out = {}
    for name, fn in (("live", live), ("service_path", service_path)):
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[name] = float(np.median(times))
    return out


def big_stream(
    conn: Any, port: int, body: bytes, headers: dict[str, str], rate: float = 0.0
) -> None:
    """(Own process) On each (start, stop) received, 1 000-customer /score on one connection
    from ``start`` to ``stop`` (monotonic clock, shared by processes): back to back, or one
    every ``1 / rate`` s when ``rate`` > 0; answers the counts. ``None`` stops it."""

    async def window(pool: Pool, start: float, stop: float) -> dict[str, int]:
        done, failed = 0, 0
        while (due := start + done / rate if rate > 0 else start) < stop:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if time.monotonic() >= stop:
                break
            status, _ = await pool.post("/score", body, headers)
            done, failed = done + 1, failed + (status != 200)
        return {"big_requests": done, "big_failed": failed}

    async def serve() -> None:
        pool = Pool("127.0.0.1", port)
        conn.send("ready")
        while (job := await asyncio.to_thread(conn.recv)) is not None:
            conn.send(await window(pool, *job))
        pool.close()

    asyncio.run(serve())


async def big_requests(pool: Pool, body: bytes, repeats: int, headers: dict) -> float:
    """Median seconds of a /score of ``body`` over HTTP (closed loop, one at a time)."""
    await pool.post("/score", body, headers)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        status, _ = await pool.post("/score", body, headers)
        times.append(time.perf_counter() - t)
        if status != 200:
            raise RuntimeError(f"/score answered {status}")
    return float(np.median(times))


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, help="state folder with a trained churn champion")
    parser.add_argument("--customers", type=int, default=5000, help="synthetic customers")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the latency run")
    parser.add_argument(
        "--workers", type=int, default=2, help="BentoML worker processes (one per core)"
    )
    parser.add_argument(
        "--pair-rounds", type=int, default=3, help="idle / loaded window pairs (item 5)"
    )
    parser.add_argument("--pair-seconds", type=float, default=10.0, help="length of each window")
    parser.add_argument(
        "--big-rate",
        type=float,
        default=0.0,
        help="1 000-customer requests per second in the loaded windows (0: back to back)",
    )
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="patron-bench-serving-"))
    proc = None
    try:
        state, model_uri, settings = prepare_state(args.home, args.customers, work)
        from features.build import latest_snapshot

        _, snap = latest_snapshot(state, "synthetic", settings["models"]["churn"]["feature_set"])
        import pandas as pd

        all_ids = pd.read_parquet(snap, columns=["customer_id"])["customer_id"].astype(str)
        rng = np.random.default_rng(0)
        ids_1000 = rng.choice(all_ids.to_numpy(), size=min(1000, len(all_ids)), replace=False)
        singles = [
            json.dumps({"customer_ids": [c]}).encode()
            for c in rng.choice(all_ids.to_numpy(), size=500)
        ]
        big = json.dumps({"customer_ids": ids_1000.tolist()}).encode()
        # the set-up (a training included) leaves a large heap in this process: a full collection
        # of it paused this client for 0.15-0.4 s, at a window's start (gc.callbacks), and the
        # pause counted as the server's latency; frozen, as the service freezes its own at load
        gc.collect()
        gc.freeze()
        proc, port = start_server(settings, state, work / "server.log", args.workers)
        headers = {"Authorization": f"Bearer {USER_KEY}"}

        async def run() -> dict[str, Any]:
            pool = Pool("127.0.0.1", port)
            await open_loop(pool, singles, 100.0, 2.0, headers)  # warm-up
            latency = await open_loop(pool, singles, args.rate, args.seconds, headers)
            http_1000 = await big_requests(pool, big, 30, headers)
            http_1 = await big_requests(pool, singles[0], 30, headers)  # HTTP's fixed cost

            async def swap(t0: float) -> dict[str, Any]:
                await asyncio.sleep(max(0.0, t0 + 3.0 - asyncio.get_running_loop().time()))
                from tests.serving.conftest import register_copy

                new = await asyncio.to_thread(register_copy, state, model_uri, NAME, ("champion",))
                admin = {"X-API-Key": ADMIN_KEY}
                status, body = await pool.post("/admin/reload", b"", admin)
                return {
                    "new_version": new,
                    "reload_status": status,
                    "reload": json.loads(body) if status == 200 else body.decode(),
                }

            swap_run = await open_loop(pool, singles, 100.0, 10.0, headers, during=swap)

            # small requests while 1 000-customer ones run back to back on their own connection,
            # in windows alternating with idle ones of the same length: the ratio compares two
            # samples of the same minutes of a shared machine. The big requests come from a
            # process of their own (another campaign system): reading their answers in this
            # event loop would delay the small requests' timing here, not in the server.
            ctx = multiprocessing.get_context("spawn")
            ours, theirs = ctx.Pipe()
            streamer = ctx.Process(
                target=big_stream, args=(theirs, port, big, headers, args.big_rate)
            )
            streamer.start()
            await asyncio.to_thread(ours.recv)  # ready

            async def bigs(t0: float) -> dict[str, Any]:
                ours.send((t0, t0 + args.pair_seconds))
                out: dict[str, Any] = await asyncio.to_thread(ours.recv)
                return out

            idle_runs, big_runs = [], []
            for _ in range(args.pair_rounds):
                idle_runs.append(
                    await open_loop(pool, singles, args.rate, args.pair_seconds, headers)
                )
                big_runs.append(
                    await open_loop(pool, singles, args.rate, args.pair_seconds, headers, bigs)
                )
            ours.send(None)
            streamer.join(timeout=30)
            pool.close()
            return {
                "latency": latency,
                "http_1000": http_1000,
                "http_1": http_1,
                "swap": swap_run,
                "idle_paired": pooled(idle_runs),
                "under_big": pooled(big_runs),
                "round_ratios": [
                    b["p99_ms"] / max(i["p99_ms"], 1e-9)
                    for i, b in zip(idle_runs, big_runs, strict=True)
                ],
            }

        measured = asyncio.run(run())
        inproc = inprocess_reference(settings, state, ids_1000.tolist(), 30)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)

    lat, swap_run = measured["latency"], measured["swap"]
    side = swap_run["side"]
    served_versions = sorted({v for v in swap_run["versions"] if v})
    result = {
        "p99_ms_1_customer_200rps": round(lat["p99_ms"], 3),
        "errors": lat["errors"],
        # the service looks scores and reasons up (computed for the whole snapshot at load), so
        # "the same work" in process is its own code path; the live predict + SHAP reference
        # is reported beside it
        "ratio_1000_to_inprocess": round(measured["http_1000"] / inproc["service_path"], 3),
        "failed_requests_during_swap": swap_run["errors"],
        # issue 14 item 5: 1-customer p99 with 1 000-customer requests running / idle p99
        # (idle windows alternating with loaded ones: see run())
        "p99_ratio_under_big_requests": round(
            measured["under_big"]["p99_ms"] / max(measured["idle_paired"]["p99_ms"], 1e-9), 3
        ),
        "under_big_requests": {
            k: (round(v, 3) if isinstance(v, float) else v)
            for k, v in measured["under_big"].items()
        },
        "idle_paired": {k: round(v, 3) for k, v in measured["idle_paired"].items()},
        "p99_ratio_per_round": [round(r, 2) for r in measured["round_ratios"]],
        "details": {
            "rate_rps": args.rate,
            "big_rate_rps": args.big_rate or "back to back",
            "workers": args.workers,
            "seconds": args.seconds,
            "requests": lat["requests"],
            "achieved_rps": round(lat["achieved_rps"], 1),
            "p50_ms": round(lat["p50_ms"], 3),
            "p90_ms": round(lat["p90_ms"], 3),
            "max_ms": round(lat["max_ms"], 3),
            "http_1000_ms": round(measured["http_1000"] * 1000, 3),
            # a 1-customer /score, closed loop: what any request costs over HTTP
            "http_1_ms": round(measured["http_1"] * 1000, 3),
            "inprocess_1000_live_ms": round(inproc["live"] * 1000, 3),
            "inprocess_1000_service_path_ms": round(inproc["service_path"] * 1000, 3),
            "ratio_1000_to_inprocess_live_predict": round(
                measured["http_1000"] / inproc["live"], 3
            ),
            "swap_requests": swap_run["requests"],
            "swap_versions_served": served_versions,
            "swap_reload": side,
            "customers": int(len(all_ids)),
            "load_average_1m_at_end": os.getloadavg()[0],
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "goals": {
            "p99_ms_1_customer_200rps": f"<= {GOALS['p99_ms_1_customer_200rps']}",
            "errors": "0",
            "ratio_1000_to_inprocess": f"<= {GOALS['ratio_1000_to_inprocess']}",
            "failed_requests_during_swap": "0",
            "p99_ratio_under_big_requests": f"<= {GOALS['p99_ratio_under_big_requests']}",
        },
    }
    result["met"] = {
        "p99_ms_1_customer_200rps": result["p99_ms_1_customer_200rps"]
        <= GOALS["p99_ms_1_customer_200rps"],
        "errors": result["errors"] == 0,
        "ratio_1000_to_inprocess": result["ratio_1000_to_inprocess"]
        <= GOALS["ratio_1000_to_inprocess"],
        "failed_requests_during_swap": result["failed_requests_during_swap"] == 0,
        "p99_ratio_under_big_requests": result["p99_ratio_under_big_requests"]
        <= GOALS["p99_ratio_under_big_requests"],
    }
    d = result["details"]
    rows = [
        (
            "1-customer /score, open loop",
            f"{d['achieved_rps']:.0f} rps x {args.seconds:.0f} s",
            f"p50 {d['p50_ms']:.2f} / p90 {d['p90_ms']:.2f} / "
            f"p99 {result['p99_ms_1_customer_200rps']:.2f} ms",
            f"errors {result['errors']}",
        ),
        ("1 000-customer /score over HTTP", "median of 30", f"{d['http_1000_ms']:.1f} ms", ""),
        ("1-customer /score over HTTP", "median of 30", f"{d['http_1_ms']:.2f} ms", ""),
        (
            "same work in process (service code)",
            "median of 30",
            f"{d['inprocess_1000_service_path_ms']:.1f} ms",
            f"ratio {result['ratio_1000_to_inprocess']:.2f}",
        ),
        (
            "in process, live predict + SHAP",
            "median of 30",
            f"{d['inprocess_1000_live_ms']:.1f} ms",
            f"ratio {d['ratio_1000_to_inprocess_live_predict']:.2f}",
        ),
        (
            "champion swap under 100 rps",
            f"{swap_run['requests']} requests",
            f"versions {served_versions}",
            f"failed {result['failed_requests_during_swap']}",
        ),
        (
            "1-customer, idle windows (paired)",
            f"{result['idle_paired']['requests']} requests",
            f"p50 {result['idle_paired']['p50_ms']:.2f} / "
            f"p99 {result['idle_paired']['p99_ms']:.2f} ms",
            f"errors {result['idle_paired']['errors']}",
        ),
        (
            "1-customer while 1 000-customer run",
            f"{result['under_big_requests']['requests']} + "
            f"{(result['under_big_requests']['side'] or {}).get('big_requests', 0)} big",
            f"p50 {result['under_big_requests']['p50_ms']:.2f} / "
            f"p99 {result['under_big_requests']['p99_ms']:.2f} ms",
            f"p99 / idle {result['p99_ratio_under_big_requests']:.2f}",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(f"\ngoals met: {result['met']}  (load average {d['load_average_1m_at_end']:.1f})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()

"""Scale benchmark: replicas sharing one Redis online store, for bases of 100 k, 1 M and 10 M.

Run ``python bench/scale.py`` (``--sizes 100000,1000000`` for a shorter run; 10 M needs ~6 GB of
RAM for Redis and a few minutes to publish). Loopback only, every phase bounded in time. Per base
size:

1. **publish**: every customer's /score record (the real record shape: score, probability,
   percentile, decile, segment, three reasons; synthetic values) written to a Redis started here,
   then the switch of the ``current`` key — the write ``patron publish`` does after scoring (the
   scoring itself is ``bench/batch_scoring.py``'s subject, whose ratio to the booster's floor is
   reported beside, from its last JSON);
2. **start**: two replicas (``bentoml serve`` of the Patron service, ``online_store`` naming the
   family) on two ports; start time = process start → ``/readyz`` 200, and the CPU seconds the
   replica's process tree spent until then (its own cost, whatever else loads a shared machine;
   the two are close on an idle one, arbiter and worker starting in series); RSS = the replica's
   whole process tree (arbiter + worker). The start does not depend on the base size (the
   replica reads nothing of the base at start): ``--sizes 100000`` measures it;
3. **load**: 1-customer ``POST /score`` at a fixed 200 requests/s for ``--seconds``, alternating
   between the replicas, open loop (latency from each request's due time: no coordinated
   omission); errors are non-200 answers; every answer checked to be the asked customer's;
4. Redis memory (``used_memory``) for the base.

Goals (issue 14): start ≤ 10 s and RSS ≤ 1 GB per replica at 10 M; p99 ≤ 10 ms; 0 errors.
Prints a table and writes ``bench/results/scale.json`` (``start_s_10m``, ``rss_mb_10m``,
``p99_ms_replicas``, ``errors``, ``batch_ratio_to_floor`` and every size's figures).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

USER_KEY = "scale-bench-user-key"
FAMILY = "churn"
GOALS = {"start_s_10m": 10.0, "rss_mb_10m": 1024.0, "p99_ms_replicas": 10.0, "errors": 0}
SEGMENTS = ["Champions", "Loyal", "At risk", "Hibernating", "New"]
STAGES = ["active", "lapsing", "lapsed", "new"]
FEATURES = ["days_since_last_order", "orders_365d", "revenue_365d", "avg_basket", "tenure_days"]


def _serving_client() -> Any:
    """bench/serving.py's keep-alive client and open-loop driver."""
    spec = importlib.util.spec_from_file_location("bench_serving", ROOT / "bench" / "serving.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def customer_id(i: int) -> str:
    return f"S{i:09d}"


def records(n: int, seed: int = 7) -> Any:
    """(customer_id, JSON record) in /score's shape, synthetic values, chunk by chunk."""
    rng = np.random.default_rng(seed)
    chunk = 100_000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        score = rng.random(m)
        pct = rng.random(m) * 100
        contrib = rng.normal(0, 0.5, (m, 3))
        seg = rng.integers(0, len(SEGMENTS), m)
        stage = rng.integers(0, len(STAGES), m)
        feat = rng.integers(0, len(FEATURES), (m, 3))
        decile = np.minimum(10, (pct // 10).astype(int) + 1)
        for j in range(m):
            cid = customer_id(start + j)
            reasons = ",".join(
                f'{{"feature":"{FEATURES[feat[j, k]]}","value":{contrib[j, k] * 40 + 100:.4f},'
                f'"contribution":{contrib[j, k]:.6f}}}'
                for k in range(3)
            )
            yield (
                cid,
                (
                    f'{{"customer_id":"{cid}","score":{score[j]:.6f},"probability":{score[j]:.6f},'
                    f'"value":null,"percentile":{pct[j]:.3f},"decile":{decile[j]},'
                    f'"segment":{{"rfm_code":"{seg[j] + 1}{stage[j] + 1}3","rfm_segment":'
                    f'"{SEGMENTS[seg[j]]}","abc_class":"B","lifecycle_stage":"{STAGES[stage[j]]}",'
                    f'"win_back_priority":false}},"reasons":[{reasons}]}}'
                ).encode(),
            )


def meta(n: int) -> dict[str, Any]:
    return {
        "family": FAMILY,
        "kind": "score",
        "output": "probability",
        "registered_model": "scale-bench",
        "alias": "champion",
        "version": "1",
        "run_id": "bench",
        "trained_at": None,
        "metrics": {},
        "tags": {},
        "dataset": "synthetic",
        "feature_set": "churn_v1",
        "snapshot_as_of": "2024-12-31",
        "published_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "bench_customers": n,
    }


def start_redis(port: int, folder: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            return proc
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_replica(settings: dict[str, Any], home: Path, log: Path) -> tuple[Any, int, float, float]:
    """A `bentoml serve` replica; (process, port, seconds to /readyz 200, CPU seconds its
    process tree spent until then: the start's own cost, whatever else loads the machine)."""
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PATRON_", "MLFLOW_"))}
    env.update(
        {
            "PATRON_HOME": str(home),
            "PATRON_SERVING": json.dumps(settings),
            "PATRON_API_KEYS": USER_KEY,
        }
    )
    from serving.lifecycle import own_bentoml_home, serve_command

    started = time.perf_counter()
    proc = subprocess.Popen(
        serve_command("127.0.0.1", port),
        env=own_bentoml_home(env, port),
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = started + 180
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"replica exited:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                wall = time.perf_counter() - started
                return proc, port, wall, tree_cpu_s(proc.pid)
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError("replica not ready in 180 s")


def tree_cpu_s(pid: int) -> float:
    import psutil

    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    return sum(sum(p.cpu_times()[:2]) for p in procs)


def tree_rss_mb(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def stop(proc: Any) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


async def load(client: Any, ports: list[int], n: int, rate: float, seconds: float) -> dict:
    """Open-loop 1-customer /score across the replicas; answers checked against the id asked."""
    pools = [client.Pool("127.0.0.1", p) for p in ports]
    headers = {"Authorization": f"Bearer {USER_KEY}"}
    rng = np.random.default_rng(11)
    count = int(rate * seconds)
    ids = [customer_id(int(i)) for i in rng.integers(0, n, count)]
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.3
    lat = np.full(count, np.nan)
    ok = np.zeros(count, dtype=bool)

    async def one(i: int) -> None:
        due = t0 + i / rate
        if (delay := due - loop.time()) > 0:
            await asyncio.sleep(delay)
        body = json.dumps({"customer_ids": [ids[i]], "reasons": True}).encode()
        try:
            status, raw = await pools[i % len(pools)].post("/score", body, headers)
            answer = json.loads(raw) if status == 200 else {}
            ok[i] = status == 200 and answer["scores"][0]["customer_id"] == ids[i]
        except Exception:
            ok[i] = False
        lat[i] = (loop.time() - due) * 1000.0

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), timeout=seconds + 60)
    for pool in pools:
        pool.close()
    return {
        "requests": count,
        "errors": int((~ok).sum()),
        "p50_ms": round(float(np.nanpercentile(lat, 50)), 2),
        "p99_ms": round(float(np.nanpercentile(lat, 99)), 2),
        "max_ms": round(float(np.nanmax(lat)), 2),
    }


def one_size(n: int, redis_port: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import redis

    from serving.online import RedisStore

    url = f"redis://127.0.0.1:{redis_port}/0"
    redis.Redis(port=redis_port).flushdb()
    store = RedisStore(url)
    started = time.perf_counter()
    pub = store.publish(FAMILY, meta(n), records(n))
    publish_s = time.perf_counter() - started
    used_mb = redis.Redis(port=redis_port).info("memory")["used_memory"] / 2**20
    settings = {
        "models": {FAMILY: {"registered_model": "scale-bench", "dataset": "synthetic"}},
        "online_store": {"url": url, "families": [FAMILY]},
        "reload_interval_s": 0,
        "home": str(work / "home"),
    }
    replicas = []
    try:
        for r in range(2):
            replicas.append(start_replica(settings, work / "home", work / f"replica{n}_{r}.log"))
        starts = [s for _, _, s, _ in replicas]
        cpus = [c for _, _, _, c in replicas]
        client = _serving_client()
        ports = [p for _, p, _, _ in replicas]
        loaded = asyncio.run(load(client, ports, n, args.rate, args.seconds))
        rss = [tree_rss_mb(proc.pid) for proc, _, _, _ in replicas]
    finally:
        for proc, _, _, _ in replicas:
            stop(proc)
    return {
        "customers": n,
        "publication": pub.pub_id,
        "publish_s": round(publish_s, 1),
        "publish_records_per_s": round(n / publish_s),
        "redis_used_mb": round(used_mb, 1),
        "start_s": [round(s, 2) for s in starts],
        "start_cpu_s": [round(c, 2) for c in cpus],
        "rss_mb": [round(r, 1) for r in rss],
        **loaded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s across replicas")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="patron-scale-"))
    (work / "home").mkdir()
    port = free_port()
    redis_proc = start_redis(port, work)
    rows = []
    try:
        for n in sizes:
            print(
                f"{n:,} customers: publishing, starting 2 replicas, {args.seconds:.0f} s at "
                f"{args.rate:.0f} req/s ...",
                flush=True,
            )
            rows.append(one_size(n, port, args, work))
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    batch_path = ROOT / "bench" / "results" / "batch_scoring.json"
    batch = json.loads(batch_path.read_text()) if batch_path.exists() else {}
    largest = rows[-1]
    result = {
        "sizes": rows,
        "largest_customers": largest["customers"],
        "start_s_largest": max(largest["start_s"]),
        "start_cpu_s_largest": max(largest["start_cpu_s"]),
        "rss_mb_largest": max(largest["rss_mb"]),
        "start_s_10m": max(r["start_s"]) if (r := _size(rows, 10_000_000)) else None,
        "rss_mb_10m": max(r["rss_mb"]) if (r := _size(rows, 10_000_000)) else None,
        "p99_ms_replicas": max(r["p99_ms"] for r in rows),
        "errors": sum(r["errors"] for r in rows),
        "batch_ratio_to_floor": {
            "scores": batch.get("ratio_scores_to_floor"),
            "scores_reasons": batch.get("ratio_scores_reasons_to_floor"),
            "source": "bench/results/batch_scoring.json "
            f"({batch.get('customers', '?')} customers; its own run's floor)",
        },
        "goals": GOALS,
        "rate_rps": args.rate,
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": os.getloadavg()[0],
        "python": platform.python_version(),
        "command": "python bench/scale.py " + " ".join(sys.argv[1:]),
    }
    print()
    print(
        f"{'customers':>11} {'publish s':>9} {'redis MB':>9} {'start s':>12} {'start CPU s':>12} "
        f"{'RSS MB':>14} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
    )
    for r in rows:
        print(
            f"{r['customers']:>11,} {r['publish_s']:>9.1f} {r['redis_used_mb']:>9.0f} "
            f"{'/'.join(f'{s:.1f}' for s in r['start_s']):>12} "
            f"{'/'.join(f'{c:.1f}' for c in r['start_cpu_s']):>12} "
            f"{'/'.join(f'{m:.0f}' for m in r['rss_mb']):>14} {r['p50_ms']:>7.2f} "
            f"{r['p99_ms']:>7.2f} {r['errors']:>6}"
        )
    b = result["batch_ratio_to_floor"]
    print(
        f"batch scoring / floor (from {b['source']}): scores {b['scores']}, "
        f"scores + reasons {b['scores_reasons']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {args.out}")


def _size(rows: list[dict[str, Any]], n: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["customers"] == n), None)


if __name__ == "__main__":
    main()

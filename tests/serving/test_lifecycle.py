"""The server's life as an operator sees it: `patron serve` stopped by SIGTERM or killed with
kill -9 leaves no process and no bound port; a broken state fails with one line and a non-zero
exit instead of a respawn loop (issue 14, item 6). Reloads and /metrics: tests/serving/test_http.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.serving.conftest import (
    ADMIN_KEY,
    ROOT,
    USER_KEY,
    Server,
    free_port,
    register_copy,
    server_env,
    serving_settings,
)

pytestmark = pytest.mark.server

NAME = "serving-lifecycle-test"


def _experiment(tmp_path: Path, registered_model: str) -> Path:
    """The churn experiment YAML, serving ``registered_model`` (so no other test's alias moves)."""
    text = (ROOT / "experiments" / "churn" / "synthetic.yaml").read_text()
    text = text.replace(
        "registered_model: churn-synthetic", f"registered_model: {registered_model}"
    )
    assert registered_model in text
    path = tmp_path / f"{registered_model}.yaml"
    path.write_text(text)
    return path


def _patron_serve(
    config: Path, home: Path, port: int, log: Path, option: str = "--config"
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PATRON_", "MLFLOW_"))}
    env.update({"PATRON_API_KEYS": USER_KEY, "PATRON_ADMIN_KEYS": ADMIN_KEY})
    cmd = [sys.executable, "-m", "patron", "serve", option, str(config), "--home", str(home)]
    return subprocess.Popen(
        [*cmd, "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path, timeout_s: float = 150.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"not ready in {timeout_s} s:\n{log.read_text(errors='replace')[-3000:]}")


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _all_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    return alive


@pytest.fixture(scope="module")
def served_config(served_pipeline, tmp_path_factory):
    state = served_pipeline["state"]
    register_copy(state, served_pipeline["logged"]["model_uri"], NAME, ("champion",))
    return _experiment(tmp_path_factory.mktemp("lifecycle"), NAME), state.home


def test_sigterm_stops_every_process_and_frees_the_port(served_config, tmp_path):
    """Through a serving YAML naming two families (one file, no JSON in the environment)."""
    _, home = served_config
    serving = tmp_path / "serving.yaml"
    serving.write_text(
        "models:\n"
        f"  churn: {{registered_model: {NAME}, dataset: synthetic}}\n"
        f"  propensity: {{registered_model: {NAME}, dataset: synthetic}}\n"
        "reload_interval_s: 0\n"
    )
    port, log = free_port(), tmp_path / "serve.log"
    proc = _patron_serve(serving, home, port, log, option="--serving")
    try:
        _wait_ready(proc, port, log)
        models = httpx.get(
            f"http://127.0.0.1:{port}/models",
            headers={"Authorization": f"Bearer {USER_KEY}"},
            timeout=30,
        ).json()["models"]
        assert sorted(m["family"] for m in models) == ["churn", "propensity"]
        tree = psutil.Process(proc.pid).children(recursive=True)
        # patron serve -> bentoml serve (circus's arbiter) -> its worker, in a session of its own
        assert any("_bentoml_impl.worker" in " ".join(p.cmdline()) for p in tree), tree
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text(errors="replace")[-2000:]
        assert _all_gone(tree, 10) == []
        assert _port_is_free(port)  # a restart on the same port would bind
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


CHILD = """
import sys, time
from serving.lifecycle import die_with_parent
die_with_parent()
print("armed", flush=True)
time.sleep(120)
"""
PARENT = """
import subprocess, sys, time
from serving.cli import _child_dies_with_parent
mode, child = sys.argv[1], sys.argv[2]
if mode == "preexec":  # how `patron serve` starts `bentoml serve`
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         preexec_fn=_child_dies_with_parent, start_new_session=True)
    print(p.pid, flush=True)
else:  # how circus starts a worker, which arms itself in Patron.__init__
    p = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "armed"
    print(p.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("mode", ["preexec", "self"])
def test_kill_9_of_a_parent_takes_its_server_child_down(mode):
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode, CHILD], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = psutil.Process(int(parent.stdout.readline()))
        assert child.is_running()
        parent.kill()  # SIGKILL: no handler of the parent runs
        parent.wait(timeout=10)
        assert _all_gone([child], 10) == []
    finally:
        if parent.poll() is None:
            parent.kill()


def test_patron_serve_refuses_a_broken_state_in_one_line(served_config, tmp_path):
    _, home = served_config
    config = _experiment(tmp_path, "no-such-registered-model")
    log = tmp_path / "serve.log"
    proc = _patron_serve(config, home, free_port(), log)
    assert proc.wait(timeout=120) == 1
    out = log.read_text(errors="replace")
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: cannot start:") and "no-such-registered-model" in lines[-1]
    assert "Traceback" not in out
    assert "BentoServer" not in out  # refused before any server process existed


def test_a_worker_that_cannot_build_its_state_stops_the_server(served_pipeline, tmp_path):
    """`bentoml serve` run directly (a Bento, a container): no respawn loop on a broken state."""
    from mlflow.tracking import MlflowClient

    state = served_pipeline["state"]
    name = f"{NAME}-broken"
    register_copy(state, served_pipeline["logged"]["model_uri"], name, ())
    client = MlflowClient(tracking_uri=state.tracking_uri, registry_uri=state.tracking_uri)
    broken = client.create_model_version(name, str(tmp_path / "deleted-model"))
    client.set_registered_model_alias(name, "champion", broken.version)
    srv = Server(
        server_env(serving_settings(served_pipeline, name), state.home), tmp_path / "s.log"
    )
    try:
        srv.proc.wait(timeout=150)  # stops by itself; before, circus respawned it forever
        log = srv.log_text()
    finally:
        srv.stop()
    assert log.count("cannot start:") == 1, log[-3000:]  # once: the worker was not respawned
    assert "deleted-model" in log or name in log

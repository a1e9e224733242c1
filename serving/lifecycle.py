"""The server's life: reload health, dying with the parent, failing fast on a broken state.

Process tree of `patron serve`: the CLI process → `bentoml serve` (circus's arbiter, in its own
process group) → one uvicorn worker holding the Patron service. Each child asks the kernel for
SIGTERM when its parent dies (``die_with_parent``), so a ``kill -9`` anywhere above never leaves a
worker holding the port; the CLI forwards SIGTERM / SIGINT to the group and waits.

A worker whose state cannot be built at start (missing or corrupt snapshot, unreachable or empty
registry, a model that does not match its snapshot) does not let circus respawn it forever: it
writes one line to ``$PATRON_STARTUP_FAILURE`` (when the CLI set it), logs the same line and asks
its arbiter to stop, so the whole server exits within seconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("patron.serving")

#: The file a worker writes its one-line start-up failure to (set by `patron serve`).
STARTUP_FAILURE_ENV = "PATRON_STARTUP_FAILURE"
_PR_SET_PDEATHSIG = 1


def one_line(exc: BaseException, limit: int = 600) -> str:
    """``Type: message`` on one line, bounded: registry and file errors carry no customer data."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{type(exc).__name__}: {text}"


@dataclass
class ReloadStatus:
    """The outcome of the last reload: the service is degraded while the last one failed."""

    error: str | None = None
    failed_at: str | None = None
    last_success_at: str | None = None
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.error = one_line(exc)
            self.failed_at = datetime.now(UTC).isoformat(timespec="seconds")
            self.failures += 1

    def succeeded(self) -> None:
        with self._lock:
            self.error = None
            self.last_success_at = datetime.now(UTC).isoformat(timespec="seconds")

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "ok": self.error is None,
                "error": self.error,
                "failed_at": self.failed_at,
                "last_success_at": self.last_success_at,
                "failures": self.failures,
            }


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux; elsewhere a
    no-op). Called in the child itself, so it works for processes we do not spawn (circus's
    workers). If the parent is already gone, the signal is raised at once."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        log.warning("could not ask to die with the parent (errno %d)", ctypes.get_errno())
        return
    if os.getppid() != parent or parent == 1:  # the parent died before the request
        os.kill(os.getpid(), sig)


def fail_startup(exc: BaseException) -> None:
    """A worker could not build its state: say why in one line and stop the whole server.

    The line goes to the log and to ``$PATRON_STARTUP_FAILURE``; the arbiter (this worker's
    parent) gets SIGTERM so circus does not respawn the worker in a loop."""
    line = f"cannot start: {one_line(exc)}"
    log.error("%s", line)
    target = os.environ.get(STARTUP_FAILURE_ENV)
    if target:
        path = Path(target)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(line + "\n")
        tmp.replace(path)
    parent = os.getppid()
    if parent > 1:
        os.kill(parent, signal.SIGTERM)


#: The service every Patron server runs (`bentoml serve` from the source tree).
SERVICE = "serving.service:Patron"


def serve_command(host: str, port: int) -> list[str]:
    """The `bentoml serve` command line of a Patron server (the venv's own ``bentoml``)."""
    bentoml = Path(sys.executable).with_name("bentoml")
    return [str(bentoml), "serve", SERVICE, "--host", host, "--port", str(port)]


def own_bentoml_home(env: dict[str, str], port: int) -> dict[str, str]:
    """``env`` with a ``BENTOML_HOME`` of this server's own.

    BentoML keeps the workers' Prometheus multiprocess files in
    ``$BENTOML_HOME/prometheus_multiproc_dir`` and empties that folder when a server starts, so two
    servers sharing a home (replicas on one host, a second server in a test) erased each other's
    request counts. A server run from the source tree reads nothing else there (its models come
    from MLflow or the online store), so each gets ``$PATRON_HOME/serve/port-<port>/bentoml``: one
    per port, reused by the next server on that port."""
    base = Path(env["PATRON_HOME"]) if env.get("PATRON_HOME") else Path(tempfile.gettempdir())
    home = base / "serve" / f"port-{port}" / "bentoml"
    home.mkdir(parents=True, exist_ok=True)
    return {**env, "BENTOML_HOME": str(home)}

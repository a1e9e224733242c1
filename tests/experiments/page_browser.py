"""Headless Chromium for the page tests: one browser per test module, driven over the DevTools
protocol on a pipe (no port, no extra package), that loads a page at 1,400 px and reports what an
analyst would see: the full-page screenshot, horizontal overflow, every chart drawn, console
errors and any request that left the machine.

Use the ``browser`` fixture of a module (``browser = browser_fixture()``), then
``check = browser.check(page_path, shot_path)`` and assert on ``check``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
WIDTH = 1400
SCREENS = Path("/tmp/patron-screens")  # a copy of each screenshot for the closing note
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-pipe",
]
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:", "chrome-error:")

# what the page shows, read in the browser after load (charts: Plotly divs and images)
PROBE = """(() => {
  const de = document.documentElement;
  const width = de.clientWidth;
  const charts = [...document.querySelectorAll('.plotly-graph-div')].map(d => {
    const r = d.getBoundingClientRect();
    return {id: d.id, width: r.width, height: r.height, right: r.right,
            traces: (d._fullData || []).length,
            marks: d.querySelectorAll('.overplot path, .overplot image').length};
  });
  const images = [...document.images].map(i => ({width: i.naturalWidth, complete: i.complete}));
  // elements poking out of the page that no scrolling box contains (the shapes inside an svg
  // are clipped by it: the svg itself is checked)
  const outside = [...document.body.querySelectorAll('*')]
    .filter(e => e.getBoundingClientRect().right > width + 1 && !e.closest('.scroll'))
    .filter(e => !(e.ownerSVGElement))
    .slice(0, 10)
    .map(e => e.tagName.toLowerCase() + '.' + String(e.getAttribute('class')).slice(0, 40));
  return {scrollWidth: de.scrollWidth, clientWidth: width, height: de.scrollHeight,
          charts, images, outside};
})()"""


@dataclass
class PageCheck:
    """What one page looked like in the browser."""

    screenshot: Path
    scroll_width: int
    client_width: int
    height: int
    charts: list[dict[str, Any]]
    images: list[dict[str, Any]]
    outside: list[str]
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    session: str = ""  # the tab, when kept open (``check(..., keep_open=True)``)

    def assert_readable(self, min_charts: int = 1) -> None:
        """No horizontal overflow, every chart drawn, no console error, nothing fetched."""
        assert self.scroll_width <= self.client_width, (
            f"page {self.scroll_width} px wide in a {self.client_width} px window: {self.outside}"
        )
        assert not self.outside, self.outside
        assert len(self.charts) + len(self.images) >= min_charts
        for chart in self.charts:
            assert chart["traces"] > 0 and chart["marks"] > 0, chart
            assert chart["width"] > 200 and chart["height"] > 150, chart
            assert chart["right"] <= self.client_width + 1, chart
        for image in self.images:
            assert image["complete"] and image["width"] > 0, image
        assert not self.console_errors, self.console_errors
        assert not self.requests, f"the page fetched {self.requests}"


class Browser:
    """One headless Chromium; ``check`` opens a page in a fresh tab."""

    def __init__(self, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # the child's ends moved above 9 first, so that placing them at 3 and 4 clobbers neither
        child_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        child_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)

        def fds() -> None:  # the protocol pipe is fds 3 (read) and 4 (write) in the child
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        self.proc = subprocess.Popen(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=fds,  # noqa: PLW1509 (no threads of ours run yet)
            pass_fds=(3, 4),
            close_fds=True,
        )
        os.close(child_r)
        os.close(child_w)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._replies[-1] = {"closed": True}
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self._events.put(msg)

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """One protocol command; its result (raises on a protocol error)."""
        self._next_id += 1
        ident = self._next_id
        msg: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + 60
        with self._cond:
            while ident not in self._replies:
                if -1 in self._replies or time.monotonic() > deadline:
                    raise RuntimeError(f"Chromium gave no answer to {method}")
                self._cond.wait(1.0)
            reply = self._replies.pop(ident)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    def _wait_for(self, method: str, session: str, timeout: float = 60) -> list[dict[str, Any]]:
        """Events up to and including ``method`` of ``session`` (all of them, in order)."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} within {timeout} s")
            try:
                event = self._events.get(timeout=left)
            except queue.Empty:
                continue
            seen.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return seen

    def _drain(self) -> list[dict[str, Any]]:
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def evaluate(self, expression: str, session: str) -> Any:
        """A JavaScript expression's value (promises awaited)."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(str(result["exceptionDetails"])[:2000])
        return result["result"].get("value")

    def open(self, path: Path, width: int = WIDTH) -> str:
        """A new tab showing ``path`` at ``width`` px, loaded and settled; its session id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", {}, session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session,
        )
        self._drain()
        self.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session)
        self._pending = self._wait_for("Page.loadEventFired", session)
        # the page's load handler resizes the charts: let that and two frames pass
        self.evaluate(
            "new Promise(r => setTimeout(() => requestAnimationFrame(() => "
            "requestAnimationFrame(r)), 300))",
            session,
        )
        return str(session)

    def check(
        self, path: Path, shot: Path, width: int = WIDTH, keep_open: bool = False
    ) -> PageCheck:
        """Open ``path``, measure it and save a full-page screenshot at ``width`` px to ``shot``;
        with ``keep_open`` the tab stays for more (``close_tab(check.session)`` after)."""
        session = self.open(path, width)
        probe = self.evaluate(PROBE, session)
        height = max(int(probe["height"]), 1)
        png = self.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
            session,
        )["data"]
        shot.parent.mkdir(parents=True, exist_ok=True)
        shot.write_bytes(base64.b64decode(png))
        SCREENS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SCREENS / shot.name)
        events = self._pending + self._drain()
        if not keep_open:
            self.close_tab(session)
        return PageCheck(
            screenshot=shot,
            scroll_width=int(probe["scrollWidth"]),
            client_width=int(probe["clientWidth"]),
            height=height,
            charts=probe["charts"],
            images=probe["images"],
            outside=probe["outside"],
            console_errors=_errors(events, session),
            requests=_requests(events, session),
            session=session if keep_open else "",
        )

    def close_tab(self, session: str) -> None:
        """Close the tab of ``session``."""
        target = self.send("Target.getTargetInfo", {}, session)["targetInfo"]["targetId"]
        self.send("Target.closeTarget", {"targetId": target})

    def close(self) -> None:
        """Ask Chromium to quit; kill it if it does not."""
        with contextlib.suppress(RuntimeError):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def _errors(events: list[dict[str, Any]], session: str) -> list[str]:
    """Console errors, uncaught exceptions and error log entries of one tab."""
    out = []
    for e in events:
        if e.get("sessionId") != session:
            continue
        p = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        elif e["method"] == "Runtime.exceptionThrown":
            details = p["exceptionDetails"]
            out.append(str(details.get("exception", {}).get("description") or details["text"]))
        elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
            out.append(f"{p['entry']['source']}: {p['entry']['text']}")
    return out


def _requests(events: list[dict[str, Any]], session: str) -> list[str]:
    """URLs the tab asked for beyond the file itself and inline data."""
    return [
        e["params"]["request"]["url"]
        for e in events
        if e.get("sessionId") == session
        and e["method"] == "Network.requestWillBeSent"
        and not e["params"]["request"]["url"].startswith(LOCAL_SCHEMES)
    ]


def browser_fixture() -> Any:
    """A module-scoped ``browser`` fixture (skips when Chromium is not installed)."""

    @pytest.fixture(scope="module")
    def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
        if not CHROMIUM.exists():
            pytest.skip(f"headless Chromium not found at {CHROMIUM} (apt-get install chromium)")
        b = Browser(tmp_path_factory.mktemp("chromium-profile"))
        try:
            yield b
        finally:
            b.close()

    return browser

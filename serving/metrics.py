"""Request metrics for Prometheus with bounded labels: one series per route, never per path.

BentoML's own traffic metrics label each request with its raw path, so requests to random paths
(scanners, typos, unauthenticated probes) grew ``/metrics`` without bound: 3,000 such requests
made it 17 MB and 6-7 s to scrape. The service turns BentoML's off and records its own: the
route is the path when it is one of the service's routes and ``other`` otherwise, the method one
of a fixed few, the status the numeric code — so the number of series is fixed by the code.

Metrics (``patron_`` prefix): ``http_requests_total{route,method,status}``,
``http_request_duration_seconds{route}`` (histogram), ``http_requests_in_progress{route}``.
They work with several workers: BentoML sets ``PROMETHEUS_MULTIPROC_DIR`` in each worker, and
``prometheus_client`` is imported only once a request arrives, after that is set.
"""

from __future__ import annotations

import os
import time
from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Send

#: The service's routes (BentoML APIs, the ops app, BentoML's built-ins); tests check the
#: OpenAPI document's paths are all here.
ROUTES = frozenset(
    {
        "/",
        "/score",
        "/next-best-offer",
        "/contactable",
        "/target",
        "/campaigns/plan",
        "/campaigns/{plan_id}/responses",
        "/campaigns/{plan_id}/readout",
        "/campaigns/{plan_id}/customers",
        "/campaigns/{plan_id}/rollout",
        "/offers",
        "/models",
        "/admin/reload",
        "/healthz",
        "/livez",
        "/readyz",
        "/metrics",
        "/docs.json",
    }
)
ROUTE_PREFIXES = ("/static_content/",)
#: Routes with a path parameter: (prefix, suffix) -> the route's template (one series each).
PARAM_ROUTES = {
    ("/campaigns/", "/responses"): "/campaigns/{plan_id}/responses",
    ("/campaigns/", "/readout"): "/campaigns/{plan_id}/readout",
    ("/campaigns/", "/customers"): "/campaigns/{plan_id}/customers",
    ("/campaigns/", "/rollout"): "/campaigns/{plan_id}/rollout",
}
METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})
OTHER = "other"
#: Latency buckets in seconds: single-customer requests are milliseconds, a whole-base plan
#: seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def route_label(path: str) -> str:
    """The route a path belongs to, or ``other``: never the raw path of an unknown one."""
    if path in ROUTES:
        return path
    for (head, tail), template in PARAM_ROUTES.items():
        middle = path[len(head) : -len(tail)] if path.startswith(head) else ""
        if path.endswith(tail) and middle and "/" not in middle:
            return template
    for prefix in ROUTE_PREFIXES:
        if path.startswith(prefix):
            return prefix.rstrip("/")
    return OTHER


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER


class _Instruments:
    """The metric objects, made on first use (after BentoML has set the multiprocess dir)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter(
            "patron_http_requests",
            "HTTP requests by route (unknown paths: 'other'), method and status",
            ["route", "method", "status"],
        )
        self.duration = Histogram(
            "patron_http_request_duration_seconds",
            "HTTP request duration by route",
            ["route"],
            buckets=BUCKETS,
        )
        self.in_progress = Gauge(
            "patron_http_requests_in_progress",
            "HTTP requests being served, by route",
            ["route"],
            multiprocess_mode="livesum",
        )


_instruments: _Instruments | None = None


def instruments() -> _Instruments:
    global _instruments
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


def exposition() -> tuple[bytes, str]:
    """The Prometheus text of every worker's metrics (multiprocess mode when BentoML set it)."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry
    from prometheus_client import generate_latest as generate

    instruments()  # the series exist (at zero) from the first scrape
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate(registry), CONTENT_TYPE_LATEST
    return generate(REGISTRY), CONTENT_TYPE_LATEST


class RequestMetrics:
    """ASGI middleware recording every HTTP request under its bounded labels (outermost of the
    service's own middleware, so refused requests are counted with their 401/403/4xx)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        m = instruments()
        route = route_label(scope.get("path", ""))
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        started = time.perf_counter()
        gauge = m.in_progress.labels(route)
        gauge.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            gauge.dec()
            m.duration.labels(route).observe(time.perf_counter() - started)
            m.requests.labels(route, method_label(scope.get("method", "")), str(status[0])).inc()

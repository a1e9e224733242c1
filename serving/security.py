"""API keys, request ids and log redaction for the service (ASGI middleware + a logging filter).

* Every path but the health, metrics and OpenAPI ones needs a key (``Authorization: Bearer <key>``
  or ``X-API-Key: <key>``); ``/admin/*`` needs an admin key. 401 without a valid key, 403 for a
  user key on an admin path.
* A POST body that says it is not JSON gets 415 before BentoML parses it (BentoML answers a
  ``multipart/form-data`` without boundary with a 500, and would unpickle ``vnd.bentoml+pickle``
  from internal callers).
* ``/docs.json`` is served corrected by serving.openapi.patch_openapi.
* One access line per API request on the ``patron.access`` logger (method, path, status,
  latency, request id), in place of BentoML's access log, which the service turns off.
* Every response carries ``X-Request-ID`` (the client's, if it sent a sane one, else a new one);
  the id is in a context variable that the service's own log lines print.
* BentoML logs a request-validation failure with its traceback, and pydantic's message in it holds
  the offending input (``input_value='C0001'``). ``RedactingFilter`` replaces a logged exception by
  its type, the error locations and the code frames: no input value reaches the log.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from serving.settings import AuthSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access = logging.getLogger("patron.access")
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("patron_request_id", default="-")
OPEN_PATHS = frozenset({"/", "/docs.json", "/healthz", "/livez", "/readyz", "/metrics"})
OPEN_PREFIXES = ("/static_content/",)
ADMIN_PREFIX = "/admin/"
_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: Loggers that may log an exception raised while handling a request.
REDACTED_LOGGERS = (
    "bentoml._internal.server.http_app",
    "bentoml.serve",
    "bentoml.io",
    "uvicorn.error",
    "patron.serving",
)


def request_id() -> str:
    """The id of the request being handled ("-" outside a request)."""
    return REQUEST_ID.get()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def presented_key(scope: Scope) -> str | None:
    """The API key of a request: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    auth = _header(scope, b"authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = _header(scope, b"x-api-key")
    return key.strip() if key and key.strip() else None


def is_open(path: str) -> bool:
    """Paths served without a key: health, readiness, metrics, the OpenAPI document and UI."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class ApiKeyMiddleware:
    """Checks API keys and content types, tags requests with an id, corrects /docs.json."""

    def __init__(self, app: ASGIApp, auth: AuthSettings | None = None) -> None:
        self.app = app
        self.auth = auth if auth is not None else AuthSettings.from_env()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = _header(scope, b"x-request-id")
        rid = sent if sent and _SANE_ID.match(sent) else _trace_id() or uuid.uuid4().hex
        token = REQUEST_ID.set(rid)
        try:
            path = scope.get("path", "")
            if path == "/docs.json" and scope.get("method") == "GET":
                await _patched_openapi(self.app, scope, receive, send, rid)
                return
            if not is_open(path):
                role = self.auth.role(presented_key(scope))
                if role == "none":
                    await _reply(
                        send,
                        401,
                        "a valid API key is needed",
                        rid,
                        [(b"www-authenticate", b"Bearer")],
                    )
                    return
                if path.startswith(ADMIN_PREFIX) and role != "admin":
                    await _reply(send, 403, "an admin API key is needed", rid)
                    return
            if scope.get("method") == "POST" and not _json_or_absent(scope):
                await _reply(send, 415, "send the body as application/json", rid)
                return

            status = 0

            async def tagged(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    headers = list(message.get("headers", []))
                    headers.append((b"x-request-id", rid.encode("ascii")))
                    message["headers"] = headers
                await send(message)

            started = time.perf_counter()
            try:
                await self.app(scope, receive, tagged)
            finally:
                if not is_open(path):
                    # the access log: method, path, status, latency and request id; no body
                    access.info(
                        "%s %s %d %.1fms request_id=%s",
                        scope.get("method", ""),
                        path,
                        status or 500,
                        (time.perf_counter() - started) * 1000.0,
                        rid,
                    )
        finally:
            REQUEST_ID.reset(token)


def _json_or_absent(scope: Scope) -> bool:
    """True when a request declares no content type or a JSON one."""
    ctype = _header(scope, b"content-type")
    if ctype is None or not ctype.strip():
        return True
    return ctype.split(";", 1)[0].strip().lower() == "application/json"


async def _patched_openapi(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, rid: str
) -> None:
    """Serve BentoML's /docs.json through patch_openapi."""
    from serving.openapi import patch_openapi

    start: Message = {}
    chunks: list[bytes] = []

    async def capture(message: Message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, capture)
    body = b"".join(chunks)
    if start.get("status") == 200:
        from serving.schemas import OffersResponse, ScoreResponse, TargetResponse

        responses = (ScoreResponse, OffersResponse, TargetResponse)
        body = json.dumps(patch_openapi(json.loads(body), OPEN_PATHS, responses)).encode()
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length",)]
    headers += [(b"content-length", str(len(body)).encode()), (b"x-request-id", rid.encode())]
    await send(
        {"type": "http.response.start", "status": start.get("status", 500), "headers": headers}
    )
    await send({"type": "http.response.body", "body": body})


def _trace_id() -> str | None:
    """BentoML's OpenTelemetry trace id of the request (its access log prints it as trace=)."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


async def _reply(
    send: Send, status: int, error: str, rid: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    from serving.errors import error_body

    body = json.dumps(error_body(None, error, rid)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode("ascii")),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def describe_exception(exc: BaseException) -> str:
    """An exception without its message: type, pydantic error locations, and the code frames."""
    parts = [type(exc).__name__]
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            items = errors(include_input=False, include_context=False, include_url=False)
            parts.append(
                "errors: "
                + "; ".join(
                    f"{'.'.join(str(x) for x in e.get('loc', ()))} ({e.get('type')})" for e in items
                )
            )
        except TypeError:
            pass
    frames = traceback.extract_tb(exc.__traceback__)[-4:]
    if frames:
        parts.append(
            "at "
            + " <- ".join(
                f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} {f.name}" for f in reversed(frames)
            )
        )
    return "; ".join(parts)


class RedactingFilter(logging.Filter):
    """Drops exception messages (they may quote input values) and adds the request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = REQUEST_ID.get()
        if record.exc_info and record.exc_info[1] is not None:
            message = record.getMessage()
            record.msg = "%s [%s; request_id=%s]"
            record.args = (message, describe_exception(record.exc_info[1]), rid)
            record.exc_info = None
            record.exc_text = None
        elif rid != "-" and "request_id=" not in str(record.msg):
            message = record.getMessage()
            record.msg = "%s [request_id=%s]"
            record.args = (message, rid)
        return True


def install_log_redaction(names: tuple[str, ...] = REDACTED_LOGGERS) -> RedactingFilter:
    """Attach one RedactingFilter to each named logger (idempotent); Patron logs at INFO."""
    patron = logging.getLogger("patron")
    if patron.level == logging.NOTSET:
        patron.setLevel(logging.INFO)
    filt = RedactingFilter()
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(filt)
    return filt

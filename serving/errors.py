"""The service's one error shape, on every 4xx and 503 it answers::

    {"error": {"field": "budget.max_cost", "message": "...", "request_id": "..."}}

``field`` is the request field at fault (null when none is: a missing key, an unknown route),
``message`` says what is wrong in words, ``request_id`` is the ``x-request-id`` of the answer.
``RequestError`` is what the request logic raises; the service answers it with that shape.
BentoML answers a body that fails its request model (wrong type, unknown field, ...) itself, with
``{"error": "<text>", "detail": [{"type", "loc", "msg"}]}``; ``ValidationErrorFields`` rewrites
that answer into the shape on its way out (the first error's location as ``field``), keeping
pydantic's ``detail`` list beside it. Input values are never in an error.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from http import HTTPStatus
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class RequestError(Exception):
    """A client error: the HTTP layer answers ``status`` with the message and the field named."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


def field_path(loc: Sequence[Any]) -> str:
    """A pydantic error location as a dotted path (``customer_ids.3``; ``body`` when empty)."""
    return ".".join(str(part) for part in loc) or "body"


def first_error(detail: Sequence[Any]) -> tuple[str, str]:
    """The field and message of the first of pydantic's errors (``budjet``, ``unknown field``),
    saying how many more ``detail`` holds."""
    first = detail[0]
    field = field_path(first.get("loc") or ())
    message = "unknown field" if first.get("type") == "extra_forbidden" else first.get("msg", "")
    more = f" (and {len(detail) - 1} more errors in detail)" if len(detail) > 1 else ""
    return field, f"{message}{more}"


def error_body(
    field: str | None,
    message: str,
    request_id: str | None,
    detail: list[Any] | None = None,
) -> dict[str, Any]:
    """The one error shape (``detail``: pydantic's errors, when a request model refused it)."""
    body: dict[str, Any] = {"error": {"field": field, "message": message, "request_id": request_id}}
    if detail:
        body["detail"] = detail
    return body


def with_field(body: Any, request_id: str | None) -> Any:
    """BentoML's validation-error body in the error shape (anything else unchanged).

    ``field`` is the first error's location (``budjet``), ``message`` its text (``unknown
    field``, plus how many more errors ``detail`` holds); ``detail`` keeps every error. Input
    values are never in it (BentoML leaves them out).
    """
    if not isinstance(body, dict) or isinstance(body.get("error"), dict):
        return body
    detail = body.get("detail")
    if not isinstance(detail, list) or not detail or not isinstance(detail[0], dict):
        return body
    field, message = first_error(detail)
    return error_body(field, message, request_id, detail)


def shaped_answer(body: bytes, status: int, request_id: str | None) -> bytes | None:
    """A 4xx answer's body in the error shape, or None when it already is.

    BentoML's validation error becomes the shape with its ``detail`` kept (``with_field``); the
    framework's own plain answers (an unmatched route's ``Not Found``, ``Method Not Allowed``)
    become the shape with a null field and that text as the message.
    """
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return None
    shaped = with_field(parsed, request_id)
    if shaped is parsed:
        text = body.decode("utf-8", "replace").strip() if parsed is None else ""
        message = text[:200] or HTTPStatus(status).phrase
        shaped = error_body(None, message, request_id)
    return json.dumps(shaped).encode()


def allowed_methods(scope: MutableMapping[str, Any]) -> set[str]:
    """Every method some route of the app serves on this request's path, mounted apps
    included: a 405's ``Allow`` (the framework names only the first route matching the path, so
    a path served by a GET route and a POST route answered ``Allow: POST`` to an OPTIONS)."""
    routes = getattr(scope.get("app"), "routes", None) or getattr(scope.get("router"), "routes", ())
    return _methods_of(routes, dict(scope))


def _methods_of(routes: Any, scope: dict[str, Any]) -> set[str]:
    from starlette.routing import Match

    methods: set[str] = set()
    for route in routes:
        try:
            match, child = route.matches(scope)
        except Exception:  # a route that cannot read this scope is not this path's
            continue
        if match == Match.NONE:
            continue
        # a mounted app or an included router: its own routes, on the rest of the path
        inner = getattr(route, "routes", None) or getattr(
            getattr(route, "original_router", None), "routes", None
        )
        if inner:
            methods |= _methods_of(inner, {**scope, **child})
        else:
            methods |= set(getattr(route, "methods", None) or ())
    return methods


class ValidationErrorFields:
    """ASGI middleware: every 4xx answer leaves in the error shape (BentoML's validation 400s and
    the framework's plain-text 404 / 405 included), as ``application/json``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def rewrite(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and 400 <= message.get("status", 0) < 500:
                start = message  # held until the whole body is in
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            from serving.security import request_id

            rid = request_id()
            shaped = shaped_answer(body, int(start["status"]), None if rid == "-" else rid)
            headers = list(start.get("headers", []))
            if shaped is not None:
                body = shaped
                headers = [
                    (k, v)
                    for k, v in headers
                    if k.lower() not in (b"content-length", b"content-type")
                ]
                headers.append((b"content-type", b"application/json"))
            else:
                headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
            if int(start["status"]) == 405:
                methods = allowed_methods(scope)
                if methods:
                    headers = [(k, v) for k, v in headers if k.lower() != b"allow"]
                    headers.append((b"allow", ", ".join(sorted(methods)).encode()))
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewrite)


def check_ids(
    customer_ids: Sequence[str], max_batch: int, field_name: str = "customer_ids"
) -> None:
    """Reject empty, oversized or duplicated id lists (the error names positions, never ids)."""
    if len(customer_ids) == 0:
        raise RequestError(field_name, "at least one customer id is needed")
    if len(customer_ids) > max_batch:
        raise RequestError(
            field_name, f"{len(customer_ids)} ids exceed the maximum of {max_batch} per request"
        )
    seen: dict[str, int] = {}
    dups: list[int] = []
    for i, cid in enumerate(customer_ids):
        if cid in seen:
            dups.append(i)
        else:
            seen[cid] = i
    if dups:
        shown = ", ".join(str(i) for i in dups[:10])
        more = f" (and {len(dups) - 10} more)" if len(dups) > 10 else ""
        raise RequestError(field_name, f"duplicated ids at positions {shown}{more}")

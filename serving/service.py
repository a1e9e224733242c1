"""The BentoML service: registry models by alias, the feature snapshot in memory, typed JSON APIs.

Endpoints (docs/serving.md): POST /score, POST /next-best-offer, POST /contactable, POST /target,
POST /campaigns/plan, POST /campaigns/{plan_id}/responses, GET /campaigns/{plan_id}/readout,
GET /campaigns/{plan_id}/customers, POST and GET /campaigns/{plan_id}/rollout, GET /offers,
GET /models, POST /admin/reload; /healthz, /readyz, /livez, /metrics and /docs.json come from
BentoML. The methods here only parse, delegate to serving.handlers / serving.decisions /
serving.state, and answer.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import bentoml
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from features.store import StateDirs
from serving.answers import score_answer, sliced_records
from serving.errors import RequestError, ValidationErrorFields, error_body
from serving.lifecycle import ReloadStatus, die_with_parent, fail_startup
from serving.metrics import RequestMetrics, exposition
from serving.online import (
    StoreUnavailable,
    check_published,
    contactable_async,
    fetch_offers_async,
    offers_answer,
    offers_from_store,
    open_store,
    score_bytes_from_store,
    store_model_info,
)
from serving.registry import Registry, tracking_uri_of
from serving.schemas import (
    Audience,
    Budget,
    ContactableRequest,
    ContactableResponse,
    ErrorResponse,
    ModelsResponse,
    OffersListResponse,
    OffersRequest,
    OffersResponse,
    PlanRequest,
    PlanResponse,
    ReadoutResponse,
    ReloadResponse,
    RequestBody,
    ResponsesRequest,
    ResponsesResponse,
    RolloutPageResponse,
    RolloutResponse,
    SavedPlanResponse,
    ScoreRequest,
    ScoreResponse,
    TargetRequest,
    TargetResponse,
    inline_schema,
)
from serving.security import ApiKeyMiddleware, install_log_redaction, request_id
from serving.settings import AuthSettings, ServingSettings
from serving.shadow import ShadowStats

if TYPE_CHECKING:
    from models.decisions.campaign import Ranking
    from serving.state import ServingState

# The request logic (serving.handlers, serving.decisions, serving.state, serving.kinds: pandas,
# the campaign planner) is imported where it is used, not here: `bentoml serve` imports this
# module in its arbiter only to read the service's definition, before starting any worker, so
# each import here is paid twice, in series, at every start (docs/serving.md, start-up).

log = logging.getLogger("patron.serving")
T = TypeVar("T")

TRACING_EXCLUDED = (
    "/score",
    "/next-best-offer",
    "/contactable",
    "/target",
    "/campaigns",
    "/offers",
    "/models",
    "/admin",
    "/healthz",
    "/readyz",
    "/livez",
    "/metrics",
)
#: Requests with at most this many ids run on the event loop (well under a millisecond each);
#: larger ones wait for I/O (the online store) or native code that releases the GIL (XGBoost's
#: live reasons) in a worker thread. Their Python work stays on the loop, in slices: a thread
#: would hold the GIL for up to 5 ms (sys.getswitchinterval) each time the loop needs it.
INLINE_MAX_IDS = 32
#: Records joined per step from the bytes encoded at load (~0.04 ms per 1 000 records, whole
#: records joined); the event loop serves other requests between two steps.
JOIN_SLICE = 1000


async def _run(n_ids: int, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` inline when the request is small, else in a worker thread."""
    if n_ids <= INLINE_MAX_IDS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


#: GET /campaigns/{plan_id}/readout's query parameter (parsed by serving.decisions, so a bad
#: value is a 400 in the service's error shape).
CONFIDENCE_PARAMETER = {
    "name": "confidence",
    "in": "query",
    "required": False,
    "description": "the roll-out gate's one-sided confidence (default 0.9)",
    "schema": {"type": "number", "minimum": 0.5, "maximum": 1, "exclusiveMaximum": True},
}
#: GET /campaigns/{plan_id}/customers' query parameters (parsed by serving.decisions).
PAGE_PARAMETERS = [
    {
        "name": "offset",
        "in": "query",
        "required": False,
        "description": "first row listed (default 0)",
        "schema": {"type": "integer", "minimum": 0, "maximum": 10**9},
    },
    {
        "name": "max_rows",
        "in": "query",
        "required": False,
        "description": "most rows listed (default 1000)",
        "schema": {"type": "integer", "minimum": 0, "maximum": 10_000},
    },
    {
        "name": "group",
        "in": "query",
        "required": False,
        "description": "only this group's rows",
        "schema": {"type": "string", "enum": ["test", "control", "rollout"]},
    },
]

#: POST /campaigns/{plan_id}/rollout's query parameter: the gate's confidence the caller decided
#: on (a read-out recorded at another is a 409).
ROLLOUT_CONFIDENCE_PARAMETER = {
    **CONFIDENCE_PARAMETER,
    "description": "the read-out's confidence the roll-out must go on (default: the recorded "
    "read-out's, whatever it is)",
}
#: GET /campaigns/{plan_id}/rollout's query parameters (parsed by serving.decisions).
ROLLOUT_PAGE_PARAMETERS = [
    *PAGE_PARAMETERS[:2],
    {
        "name": "decision",
        "in": "query",
        "required": False,
        "description": "only this decision's rows (contact: the customers to contact now)",
        "schema": {"type": "string", "enum": ["contact", "held"]},
    },
]

#: GET /models and the admin actions (BentoML APIs are POST only); mounted on the service.
ops = FastAPI(
    title="patron-ops",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)


def _freeze_heap() -> None:
    """Move what is loaded out of the cyclic GC's reach: shorter collections while serving."""
    gc.collect()
    gc.freeze()


def _api(route: str, body: type[RequestBody]) -> Callable[[Callable[..., Any]], Any]:
    """``bentoml.api`` with ``body`` as the request model, so unknown fields are refused.

    The model BentoML builds from a method's parameters ignores unknown fields (a misspelt
    ``"budjet"`` would silently drop the budget), so each API names its body model; BentoML calls
    the method with the model's fields as keyword arguments, hence they must be its parameters.
    """

    def wrap(func: Callable[..., Any]) -> Any:
        params = set(list(inspect.signature(func).parameters)[1:])  # without self
        if params != set(body.model_fields):
            raise TypeError(
                f"{func.__name__} takes {sorted(params)} but {body.__name__} has "
                f"{sorted(body.model_fields)}"
            )
        return bentoml.api(route=route, input_spec=body)(func)

    return wrap


async def _unknown_inputs(request: Request, query: frozenset[str]) -> RequestError | None:
    """An error naming the first unknown query parameter or body field of a route without a
    body (FastAPI would ignore both: ``?forse=true`` or ``{"force": true}`` would not force)."""
    extra = sorted(set(request.query_params) - query)
    if extra:
        name = extra[0][:64]
        return RequestError(
            name, f"unknown query parameter {name!r}; this route takes only {sorted(query)}"
        )
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    field = next(iter(body))[:64] if isinstance(body, dict) and body else "body"
    return RequestError(
        field, f"{field!r}: this route takes no body; its query parameters are {sorted(query)}"
    )


def _error(exc: RequestError, endpoint: str) -> JSONResponse:
    """A 4xx answer naming the field; logged without any input value."""
    log.info("%s rejected: field=%s status=%d", endpoint, exc.field, exc.status)
    detail = getattr(exc, "detail", None)  # pydantic's errors (no input values), when validated
    body = error_body(exc.field, exc.message, request_id(), detail)
    return JSONResponse(body, status_code=exc.status)


@bentoml.asgi_app(ops, path="/")
@bentoml.service(
    name="patron",
    traffic={"timeout": 60},
    # serving.security writes the access log (with request ids); BentoML's would double it
    logging={"access": {"enabled": False}},
    # BentoML's traffic metrics label requests by raw path (unbounded): serving.metrics records
    # them by route instead, and the ops app serves /metrics
    metrics={"enabled": False},
    # no exporter is configured: per-request spans would only cost time (override with
    # BENTOML_CONFIG_OPTIONS when exporting traces)
    tracing={"excluded_urls": list(TRACING_EXCLUDED)},
)
class Patron:
    """Scores customers, ranks offers and selects campaign audiences with the registry's models."""

    def __init__(self) -> None:
        die_with_parent()  # no worker outlives its arbiter, whatever killed it
        install_log_redaction()
        self._reload_lock = threading.Lock()
        self.reload_status = ReloadStatus()
        self.shadow = ShadowStats()
        started = time.perf_counter()
        try:
            AuthSettings.from_env().check_startable()
            self.settings = ServingSettings.from_env()
            self.dirs = StateDirs.resolve(self.settings.home)
            # run from a Bento that carries its models: those, with no MLflow server reached
            from serving.bento_models import registry_for

            self.registry = registry_for(Registry(tracking_uri_of(self.settings, self.dirs)))
            # families the online store serves load nothing here: a connection, then reads
            self.store = None
            if self.settings.online_store is not None:
                cfg = self.settings.online_store
                self.store = open_store(cfg.url, cfg.prefix, cfg.keep_previous_s)
                check_published(self.store, cfg.families, cfg.url)
            from serving.state import build_state

            self._state: ServingState = build_state(self.settings, self.dirs, None, self.registry)
        except Exception as exc:
            fail_startup(exc)  # one line, and the server stops instead of respawning this
            raise
        log.info(
            "loaded %s in %.1f s",
            {f: m.meta.version for f, m in self._state.models.items()},
            time.perf_counter() - started,
        )
        _freeze_heap()
        self._stop = threading.Event()
        if self.settings.reload_interval_s > 0:
            threading.Thread(target=self._poll, name="patron-reload", daemon=True).start()

    # ------------------------------------------------------------------ reload

    @property
    def state(self) -> ServingState:
        """The current state; a request reads it once and keeps it to the end."""
        return self._state

    def reload(self, force: bool = False) -> tuple[bool, ServingState]:
        """Build a new state if an alias or a snapshot moved (or, forced, from scratch), then
        swap it in. A failed build keeps the old state, marks the service degraded (``/readyz``
        answers 503, ``/models`` shows the error) until a later reload succeeds, and raises."""
        from serving.state import build_state, state_keys

        with self._reload_lock:
            current = self._state
            try:
                keys = state_keys(self.settings, self.dirs, self.registry)
                if not force and keys == current.keys:
                    self.reload_status.succeeded()
                    return False, current
                started = time.perf_counter()
                # forced: nothing of the current state is reused (models, bases, reasons)
                new = build_state(
                    self.settings, self.dirs, None if force else current, self.registry
                )
            except Exception as exc:
                self.reload_status.failed(exc)
                raise
            self._state = new  # the swap: one reference assignment
            self.reload_status.succeeded()
            self.shadow.reset()
            _freeze_heap()
            log.info(
                "reloaded %s in %.1f s",
                {f: m.meta.version for f, m in new.models.items()},
                time.perf_counter() - started,
            )
            return True, new

    def __is_ready__(self) -> bool:
        """BentoML's /readyz: 503 while the last reload failed (the old models still answer)
        or while the online store does not answer."""
        if self.store is not None:
            try:
                self.store.ping()
            except StoreUnavailable:
                return False
        return self.reload_status.error is None

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.reload_interval_s):
            try:
                self.reload()
            except Exception as exc:  # keep serving the old state
                # registry and file errors only: no customer data is in these messages
                log.warning(
                    "reload poll failed (%s); still serving the loaded models",
                    self.reload_status.error or type(exc).__name__,
                )

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ APIs

    # Each API's body is a model of serving.schemas (unknown fields refused at every level);
    # BentoML passes its fields as the keyword arguments.
    @_api("/score", ScoreRequest)
    async def score(self, customer_ids: list[str], model: str, reasons: bool) -> ScoreResponse:
        """Score, percentile and decile in the current base, segment and top-3 reasons per
        customer; ids not in the snapshot are listed under `unknown`, not errors."""
        state = self.state  # read once: this request finishes on this state whatever reloads
        try:
            if model in self.settings.store_families:
                body = await self._score_store(model, customer_ids, reasons)
            else:
                body = await self._score(state, model, customer_ids, reasons)
        except RequestError as exc:
            return _error(exc, "score")  # type: ignore[return-value]
        # the JSON is made here, in slices: BentoML would dump a ScoreResponse on the event
        # loop in one piece (two full passes over every row)
        return Response(body, media_type="application/json")  # type: ignore[return-value]

    async def _score_store(self, model: str, customer_ids: list[str], reasons: bool) -> bytes:
        assert self.store is not None
        try:
            # on the event loop: a small request's two reads synchronous (sub-millisecond), a
            # large one's awaited in steps of serving.online.FETCH_SLICE keys; no worker thread
            # (its Python work held the GIL for up to 5 ms each time the loop needed it back,
            # so every small request beside a large one waited)
            return await score_bytes_from_store(
                self.store, model, customer_ids, self.settings.max_batch, reasons, INLINE_MAX_IDS
            )
        except StoreUnavailable as exc:  # the store's fault, not the request's: 503
            raise RequestError("model", f"the online store cannot answer: {exc}", 503) from exc

    async def _score(
        self, state: ServingState, model: str, customer_ids: list[str], reasons: bool
    ) -> bytes:
        from serving.handlers import plan_score, score_records
        from serving.kinds import ScoreModel

        plan = plan_score(state, model, customer_ids, self.settings.max_batch)
        served, known = plan.served, plan.known
        encoded = served.encoded
        if encoded is not None:  # records encoded at load: the answer joins their bytes
            parts = []
            for start in range(0, len(known), JOIN_SLICE):
                if start:
                    await asyncio.sleep(0)
                parts.append(encoded.join(known[start : start + JOIN_SLICE], reasons))
        else:
            # reasons of a base too large to precompute them are XGBoost's work (it releases
            # the GIL): worker threads', not the event loop's, for all but small requests
            live = reasons and served.explainer is not None and served.explainer.top is None
            parts = await sliced_records(
                len(known),
                lambda a, b: score_records(served, known[a:b], reasons),
                threaded=live and len(known) > INLINE_MAX_IDS,
            )
        shadow = state.shadows.get(model)
        if isinstance(shadow, ScoreModel):
            self.shadow.add(model, served, shadow, known)
            self.shadow.maybe_log(self.settings.shadow_log_every_s)
        return score_answer(plan.head, parts, plan.unknown)

    @_api("/next-best-offer", OffersRequest)
    async def next_best_offer(
        self, customer_ids: list[str], k: int, kind: str, model: str | None
    ) -> OffersResponse:
        """The k best eligible offers per customer from the next-best-offer model (404 when
        none is served); ids not in the snapshot are listed under `unknown`."""
        state = self.state
        family = model if model is not None else self._store_offer_family(state)

        def work(read: tuple[Any, list[bytes | None]] | None = None) -> OffersResponse:
            if read is not None:  # a large request's records, read on the event loop in steps
                body = offers_answer(read[0], customer_ids, read[1], k, kind)
            elif family is not None and family in self.settings.store_families:
                assert self.store is not None  # a small request: two short synchronous reads
                body = offers_from_store(
                    self.store, family, customer_ids, k, kind, self.settings.max_batch
                )
            else:
                from serving.handlers import rank_offers

                body = rank_offers(state, model, customer_ids, k, kind, self.settings.max_batch)
            return OffersResponse.model_validate(body)

        try:
            large = len(customer_ids) > INLINE_MAX_IDS
            if large and family is not None and family in self.settings.store_families:
                assert self.store is not None  # as /score: awaited in steps, no worker thread
                read = await fetch_offers_async(
                    self.store, family, customer_ids, k, kind, self.settings.max_batch
                )
                return await _run(len(customer_ids), work, read)
            return await _run(len(customer_ids), work)
        except StoreUnavailable as exc:  # the store's fault, not the request's: 503
            failed = RequestError("model", f"the online store cannot answer: {exc}", 503)
            return _error(failed, "next-best-offer")  # type: ignore[return-value]
        except RequestError as exc:
            return _error(exc, "next-best-offer")  # type: ignore[return-value]

    def _store_offer_family(self, state: ServingState) -> str | None:
        """The store family that /next-best-offer answers without a model named: none when a
        next-best-offer model is served in memory (that one answers, as before), else the
        first store family whose publication is of a next-best-offer model."""
        if self.store is None or any(
            getattr(getattr(m, "meta", None), "kind", None) == "nbo" for m in state.models.values()
        ):
            return None
        for family in sorted(self.settings.store_families):
            try:
                publication = self.store.current(family)
            except StoreUnavailable:
                continue
            if publication is not None and publication.meta.get("kind") == "nbo":
                return family
        return None

    @_api("/contactable", ContactableRequest)
    async def contactable(
        self, customer_ids: list[str], channel: str, model: str | None
    ) -> ContactableResponse:
        """Which of these customers may be contacted on the channel: only an explicit yes of
        the customers table is consent (the flags /target selects with); ids not in the base
        are listed under `unknown`. Nothing else of a customer is answered."""
        state = self.state
        try:
            family = model if model is not None else self._only_family(state)
            if family in self.settings.store_families:
                assert self.store is not None  # as /score: small synchronous, large in steps
                body = await contactable_async(
                    self.store,
                    family,
                    customer_ids,
                    channel,
                    self.settings.max_batch,
                    INLINE_MAX_IDS,
                )
            else:
                from serving.handlers import contactable_customers

                body = await _run(
                    len(customer_ids),
                    contactable_customers,
                    state,
                    family,
                    customer_ids,
                    channel,
                    self.settings.max_batch,
                )
        except StoreUnavailable as exc:  # the store's fault, not the request's: 503
            failed = RequestError("model", f"the online store cannot answer: {exc}", 503)
            return _error(failed, "contactable")  # type: ignore[return-value]
        except RequestError as exc:
            return _error(exc, "contactable")  # type: ignore[return-value]
        # counts only: no customer id in the log
        log.info(
            "contactable model=%s channel=%s asked=%d contactable=%d unknown=%d",
            family,
            channel,
            len(customer_ids),
            len(body["contactable"]),
            len(body["unknown"]),
        )
        return ContactableResponse.model_validate(body)

    def _only_family(self, state: ServingState) -> str:
        """The family a request without `model` reads: the only one served (in memory or from
        the online store); with several, the request must name one (a 400 naming `model`)."""
        served = sorted({*state.models, *self.settings.store_families})
        if len(served) == 1:
            return served[0]
        if not served:
            raise RequestError("model", "no model is served", 404)
        raise RequestError("model", f"several models are served, name one of {served}")

    @_api("/target", TargetRequest)
    async def target(
        self,
        campaign_id: str,
        channel: str,
        model: str | None,
        offer_id: str | None,
        audience: Audience | None,
        budget: Budget | None,
        cost_per_contact: float | None,
        value_per_conversion: float | None,
        control_fraction: float,
        test_cell_fraction: float,
        win_back_first: bool,
        include_customers: bool,
        ranking: Ranking | None,
    ) -> TargetResponse:
        """Customers maximising expected profit (uplift x value - cost) within the budget, with
        control and test cells fixed by hash(campaign, customer); never a customer without
        consent for the channel. A churn or response-probability model ranks only with
        `ranking: {basis: non_causal_score, reason}`, its figures labelled non-incremental."""
        state = self.state

        def work() -> TargetResponse:
            from serving.handlers import target_customers

            body = target_customers(
                state,
                campaign_id=campaign_id,
                channel=channel,
                model=model,
                offer_id=offer_id,
                audience=audience.model_dump() if audience else None,
                budget=budget.model_dump() if budget else None,
                cost_per_contact=cost_per_contact,
                value_per_conversion=value_per_conversion,
                control_fraction=control_fraction,
                test_cell_fraction=test_cell_fraction,
                win_back_first=win_back_first,
                include_customers=include_customers,
                ranking=ranking.model_dump() if ranking else None,
            )
            summary = body["summary"]
            log.info(
                "target model=%s channel=%s selected=%d contacted=%d",
                body["model"],
                channel,
                summary["selected"],
                summary["contacted"],
            )
            return TargetResponse.model_validate(body)

        try:
            return await asyncio.to_thread(work)  # the whole base: never on the event loop
        except RequestError as exc:
            return _error(exc, "target")  # type: ignore[return-value]

    @_api("/campaigns/plan", PlanRequest)
    async def campaigns_plan(
        self,
        campaign_name: str | None,
        campaign: dict[str, Any] | None,
        value_model: str | None,
        customer_ids: list[str] | None,
        selected_only: bool,
        offset: int,
        max_rows: int,
        save: bool,
    ) -> PlanResponse:
        """Plan a campaign (configured by name, or inline): per customer the offer, channel and
        group, or why not; totals per offer and channel; exclusions per reason adding up to the
        base. Estimates come from the served models each offer names. `save: true` stores the
        plan, immutable, and answers its `plan_id` (for /campaigns/{plan_id}/...)."""
        state = self.state

        def work() -> PlanResponse:
            from serving.decisions import plan_request

            body = plan_request(
                state,
                self.dirs,
                campaign_name=campaign_name,
                campaign=campaign,
                value_model=value_model,
                customer_ids=customer_ids,
                selected_only=selected_only,
                offset=offset,
                max_rows=max_rows,
                save=save,
            )
            summary = body["summary"]
            log.info(
                "plan campaign=%s source=%s basis=%s selected=%d contacted=%d saved=%s",
                body["campaign_id"],
                body["source"],
                summary["basis"],
                summary["selected"],
                summary["contacted"],
                body["plan_id"],
            )
            return PlanResponse.model_validate(body)

        try:
            return await asyncio.to_thread(work)  # the whole base: never on the event loop
        except RequestError as exc:
            return _error(exc, "campaigns/plan")  # type: ignore[return-value]

    # `:path`: any plan id reaches the handler (an encoded "/" or an empty one is a 404 in the
    # error shape, not the framework's unmatched-route answer)
    @ops.post(
        "/campaigns/{plan_id:path}/responses",
        response_model=ResponsesResponse,
        summary="Post a saved plan's responses",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": inline_schema(ResponsesRequest)}},
            }
        },
        responses={code: {"model": ErrorResponse} for code in (400, 404, 409)},
    )
    async def campaign_responses(
        self, request: Request, plan_id: str
    ) -> ResponsesResponse | JSONResponse:
        """The wave's responses (campaign_history layout), idempotent by customer_id: the same
        response again is a no-op, a different one for a stored contact a 409 naming the field
        (nothing of that batch is stored); responses of customers outside the test cell and
        control group are kept with the reason and listed."""
        from serving.decisions import post_responses, request_model, unknown_query

        try:
            refused = unknown_query(request.query_params, frozenset())
            if refused is not None:
                raise refused
            body = request_model(await request.body(), ResponsesRequest)
            out = await asyncio.to_thread(post_responses, self.dirs, plan_id, body.responses)
        except RequestError as exc:
            return _error(exc, "campaigns/responses")
        # counts only: no customer id or response in the log
        log.info(
            "responses plan=%s received=%d accepted=%d unchanged=%d rejected=%d",
            plan_id,
            out["received"],
            out["accepted"],
            out["unchanged"],
            len(out["rejected"]),
        )
        return ResponsesResponse.model_validate(out)

    @ops.get(
        "/campaigns/{plan_id:path}/readout",
        response_model=ReadoutResponse,
        summary="A saved plan's read-out and roll-out gate",
        responses={code: {"model": ErrorResponse} for code in (400, 404, 422)},
        openapi_extra={"parameters": [CONFIDENCE_PARAMETER]},
    )
    async def campaign_readout(
        self, request: Request, plan_id: str
    ) -> ReadoutResponse | JSONResponse:
        """Per arm: incremental response and profit per contact against its segment's controls, with
        intervals, actual vs expected, declines by reason, and the roll-out gate's decision at
        `?confidence=` (one-sided, default 0.9); recorded beside the plan (readout.json)."""
        from serving.decisions import gate_confidence, plan_readout

        try:
            refused = await _unknown_inputs(request, frozenset({"confidence"}))
            if refused is not None:
                raise refused
            confidence = gate_confidence(request.query_params.get("confidence"))
            out = await asyncio.to_thread(plan_readout, self.dirs, plan_id, confidence)
        except RequestError as exc:
            return _error(exc, "campaigns/readout")
        log.info(
            "readout plan=%s read=%d rolled_out=%d of %d",
            plan_id,
            out["read"],
            sum(bool(g["roll_out"]) for g in out["gate"]),
            len(out["gate"]),
        )
        return ReadoutResponse.model_validate(out)

    @ops.get(
        "/campaigns/{plan_id:path}/customers",
        response_model=SavedPlanResponse,
        summary="A saved plan's record and customer rows",
        responses={code: {"model": ErrorResponse} for code in (400, 404)},
        openapi_extra={"parameters": PAGE_PARAMETERS},
    )
    async def campaign_customers(
        self, request: Request, plan_id: str
    ) -> SavedPlanResponse | JSONResponse:
        """The plan as saved (never re-planned: the models may have moved since): its record
        and its customer rows, paged, optionally one group's (e.g. the test cell to contact)."""
        from serving.decisions import page_query, saved_plan_page

        try:
            refused = await _unknown_inputs(request, frozenset({"offset", "max_rows", "group"}))
            if refused is not None:
                raise refused
            offset, max_rows, group = page_query(request.query_params)
            out = await asyncio.to_thread(
                saved_plan_page, self.dirs, plan_id, offset, max_rows, group
            )
        except RequestError as exc:
            return _error(exc, "campaigns/customers")
        return SavedPlanResponse.model_validate(out)

    @ops.post(
        "/campaigns/{plan_id:path}/rollout",
        response_model=RolloutResponse,
        summary="Record a saved plan's roll-out from its read-out",
        responses={code: {"model": ErrorResponse} for code in (400, 404, 409)},
        openapi_extra={"parameters": [ROLLOUT_CONFIDENCE_PARAMETER]},
    )
    async def campaign_rollout(
        self, request: Request, plan_id: str
    ) -> RolloutResponse | JSONResponse:
        """The roll-out on the recorded read-out: each customer of the plan's roll-out group
        only the arm the plan gave them, contacted when the gate passed that arm, else held
        (with the reason; also when their consent for the channel is withdrawn now). Recorded
        once beside the plan: the same read-out again answers the recorded roll-out; none
        recorded yet, responses stored since, or another read-out than the roll-out's: 409."""
        from serving.decisions import gate_confidence, plan_rollout

        try:
            refused = await _unknown_inputs(request, frozenset({"confidence"}))
            if refused is not None:
                raise refused
            text = request.query_params.get("confidence")
            confidence = None if text is None else gate_confidence(text)
            state = self.state
            out = await asyncio.to_thread(plan_rollout, state, self.dirs, plan_id, confidence)
        except RequestError as exc:
            return _error(exc, "campaigns/rollout")
        totals = out["totals"]  # counts only: no customer id in the log
        log.info(
            "rollout plan=%s created=%s customers=%d contacted=%d held=%d held_for_consent=%d",
            plan_id,
            out["created"],
            totals["customers"],
            totals["contacted"],
            totals["held"],
            totals["held_for_consent"],
        )
        return RolloutResponse.model_validate(out)

    @ops.get(
        "/campaigns/{plan_id:path}/rollout",
        response_model=RolloutPageResponse,
        summary="A saved plan's recorded roll-out and its rows",
        responses={code: {"model": ErrorResponse} for code in (400, 404)},
        openapi_extra={"parameters": ROLLOUT_PAGE_PARAMETERS},
    )
    async def campaign_rollout_rows(
        self, request: Request, plan_id: str
    ) -> RolloutPageResponse | JSONResponse:
        """The recorded roll-out (per arm, counts, the read-out it went on) and its rows, paged,
        optionally one decision's (`contact`: the customers to contact now)."""
        from serving.decisions import rollout_page, rollout_query

        try:
            refused = await _unknown_inputs(request, frozenset({"offset", "max_rows", "decision"}))
            if refused is not None:
                raise refused
            offset, max_rows, decision = rollout_query(request.query_params)
            out = await asyncio.to_thread(
                rollout_page, self.dirs, plan_id, offset, max_rows, decision
            )
        except RequestError as exc:
            return _error(exc, "campaigns/rollout")
        return RolloutPageResponse.model_validate(out)

    @ops.get("/offers", response_model=OffersListResponse, summary="Offers to plan with")
    async def offers(self, request: Request) -> OffersListResponse | JSONResponse:
        """The offers of the configured campaigns (with the served model each names) and of
        the served next-best-offer models."""
        refused = await _unknown_inputs(request, frozenset())
        if refused is not None:
            return _error(refused, "offers")
        from serving.decisions import offers_listing

        return OffersListResponse.model_validate(offers_listing(self.state))

    @ops.get("/models", response_model=ModelsResponse, summary="Loaded models")
    def models(self) -> ModelsResponse:
        """Loaded models: version, alias, training date, test metrics, snapshot date, monitoring
        and shadow aggregates."""
        from serving.handlers import model_info

        state = self.state
        stored = []
        for family in sorted(self.settings.store_families):
            assert self.store is not None
            try:
                stored.append(store_model_info(self.store, family))
            except StoreUnavailable as exc:  # /readyz says 503 meanwhile
                log.warning("online store unavailable for /models: %s", exc)
        return ModelsResponse.model_validate(
            {
                "loaded_at": state.loaded_at,
                "models": model_info(state, self.shadow.summary()) + stored,
                "reload": self.reload_status.as_dict(),
            }
        )

    @ops.get("/metrics", include_in_schema=False)
    def metrics(self) -> Response:
        """Prometheus metrics, one series per route (serving.metrics)."""
        body, content_type = exposition()
        return Response(body, media_type=content_type)

    @ops.post("/admin/reload", response_model=ReloadResponse, summary="Reload from the registry")
    async def admin_reload(
        self, request: Request, force: bool = False
    ) -> ReloadResponse | JSONResponse:
        """Load the aliases' current versions and the latest snapshots, then swap them in
        (admin key); requests in flight finish on the previous models."""
        refused = await _unknown_inputs(request, frozenset({"force"}))
        if refused is not None:
            return _error(refused, "admin/reload")
        try:
            swapped, state = await asyncio.to_thread(self.reload, force)
        except Exception:
            # the old state still serves; the reason (registry and file errors, no customer
            # data) is in /models and the 503 of /readyz until a reload succeeds
            failed = RequestError(
                "reload",
                f"reload failed, still serving the models loaded at {self.state.loaded_at}: "
                f"{self.reload_status.error}",
                503,
            )
            return _error(failed, "admin/reload")
        return ReloadResponse(
            swapped=swapped,
            versions={f: m.meta.version for f, m in state.models.items()},
            loaded_at=state.loaded_at,
        )


def _with_api_keys(service: Any) -> Any:
    service.add_asgi_middleware(RequestMetrics)  # first added: outermost of ours
    service.add_asgi_middleware(ApiKeyMiddleware)
    service.add_asgi_middleware(ValidationErrorFields)
    return service


_with_api_keys(Patron)

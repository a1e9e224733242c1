"""Unknown request fields are refused at every level, and a money budget needs a cost.

A misspelt field must not change the answer silently: ``"budjet"`` once dropped the budget of a
/target request (every consenting customer selected instead of 100). The routes are enumerated
from the service, so a new API cannot escape: first fast checks of the request models, then
the real server over HTTP on loopback.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ValidationError

from serving.errors import shaped_answer, with_field
from serving.schemas import Budget, OffersRequest, ScoreRequest, TargetRequest
from serving.service import Patron, ops
from serving.targeting import CampaignRules
from tests.serving.conftest import (
    ADMIN_KEY,
    NON_CAUSAL,
    USER_KEY,
    Server,
    register_copy,
    server_env,
    serving_settings,
)

NAME = "serving-strict-test"
USER = {"Authorization": f"Bearer {USER_KEY}"}
ADMIN = {"X-API-Key": ADMIN_KEY}
UNKNOWN = "zz_unknown_field"


# --------------------------------------------------------------------------- the routes


def body_models() -> dict[str, type[BaseModel]]:
    """Route -> request model of every BentoML API of the service."""
    return {api.route: api.input_spec for api in Patron.apis.values()}


def ops_post_routes() -> list[str]:
    """POST routes of the FastAPI app mounted on the service (/admin/reload, ...)."""
    return sorted(path for path, item in ops.openapi()["paths"].items() if "post" in item)


def nested_models(annotation: Any) -> Iterator[type[BaseModel]]:
    """Every pydantic model inside a field annotation (lists, unions, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from nested_models(arg)


def nested_fields(model: type[BaseModel]) -> list[tuple[str, type[BaseModel]]]:
    """(path, model) of every model reachable from ``model``'s fields, ``model`` itself first."""
    out = [("", model)]
    for name, info in model.model_fields.items():
        for sub in nested_models(info.annotation):
            out += [(f"{name}.{p}".rstrip("."), m) for p, m in nested_fields(sub)]
    return out


def valid_body(model: type[BaseModel]) -> dict[str, Any]:
    """The required fields of a request model, each set to its first documented example."""
    body = {}
    for name, info in model.model_fields.items():
        if info.is_required():
            assert info.examples, f"{model.__name__}.{name} needs an example for this test"
            body[name] = info.examples[0]
    model.model_validate(body)
    return body


def with_unknown(model: type[BaseModel], path: str) -> tuple[dict[str, Any], str]:
    """A valid body with an unknown field added in the nested model at ``path`` (dotted), and
    the dotted location the error must name."""
    parts = path.split(".") if path else []
    body = valid_body(model)
    node, current = body, model
    for part in parts:
        annotation = current.model_fields[part].annotation
        assert typing.get_origin(annotation) is not list, f"extend with_unknown for {path}"
        current = next(nested_models(annotation))
        node[part] = valid_body(current)
        node = node[part]
    node[UNKNOWN] = 1
    return body, ".".join([*parts, UNKNOWN])


def test_the_service_has_the_routes_this_file_expects():
    assert {"/score", "/next-best-offer", "/target"} <= set(body_models())
    assert "/admin/reload" in ops_post_routes()


@pytest.mark.parametrize("route", sorted(body_models()))
def test_every_request_model_forbids_unknown_fields_at_every_level(route):
    for path, model in nested_fields(body_models()[route]):
        assert model.model_config.get("extra") == "forbid", (route, path or "<body>")


@pytest.mark.parametrize("route", sorted(body_models()))
def test_every_request_model_names_an_unknown_field_with_its_path(route):
    model = body_models()[route]
    for path, _ in nested_fields(model):
        body, expected = with_unknown(model, path)
        with pytest.raises(ValidationError) as err:
            model.model_validate(body)
        locs = [(".".join(map(str, e["loc"])), e["type"]) for e in err.value.errors()]
        assert locs == [(expected, "extra_forbidden")], locs


@pytest.mark.parametrize(
    ("model", "body", "loc"),
    [
        (TargetRequest, {"campaign_id": "c", "channel": "sms", "budjet": {}}, ("budjet",)),
        (
            TargetRequest,
            {"campaign_id": "c", "channel": "sms", "budget": {"max_costs": 5.0}},
            ("budget", "max_costs"),
        ),
        (
            TargetRequest,
            {"campaign_id": "c", "channel": "sms", "audience": {"segment": ["Lost"]}},
            ("audience", "segment"),
        ),
        (ScoreRequest, {"customer_ids": ["C1"], "reason": False}, ("reason",)),
        (OffersRequest, {"customer_ids": ["C1"], "kinds": "any"}, ("kinds",)),
    ],
)
def test_misspelt_fields_are_refused(model, body, loc):
    with pytest.raises(ValidationError) as err:
        model.model_validate(body)
    assert [(e["loc"], e["type"]) for e in err.value.errors()] == [(loc, "extra_forbidden")]


def test_a_non_causal_ranking_needs_a_reason():
    body = {"campaign_id": "c", "channel": "sms", "model": "churn"}
    for ranking in ({"basis": "non_causal_score"}, {"basis": "non_causal_score", "reason": " "}):
        with pytest.raises(ValidationError) as err:
            TargetRequest.model_validate({**body, "ranking": ranking})
        (error,) = err.value.errors()
        assert error["loc"] == ("ranking",) and "reason" in error["msg"]
    ok = TargetRequest.model_validate({**body, "ranking": NON_CAUSAL})
    assert ok.ranking is not None and ok.ranking.basis == "non_causal_score"
    assert TargetRequest.model_validate(body).ranking is None  # default: rank by uplift


def test_the_api_methods_take_exactly_their_models_fields():
    import inspect

    for api in Patron.apis.values():
        params = set(list(inspect.signature(api.func).parameters)[1:])
        assert params == set(api.input_spec.model_fields), api.route


def test_a_method_whose_parameters_differ_from_its_model_is_refused_at_import():
    from serving.service import _api

    async def score(self, customer_ids: list[str], model: str) -> None: ...

    with pytest.raises(TypeError, match="reasons"):
        _api("/score", ScoreRequest)(score)


def test_validation_errors_get_the_field_and_request_id():
    bentoml_body = {
        "error": "1 validation error for TargetRequestIODescriptor",
        "detail": [{"type": "extra_forbidden", "loc": ["budget", "max_costs"], "msg": "Extra"}],
    }
    out = with_field(bentoml_body, "rid-1")
    assert out == {
        "error": {"field": "budget.max_costs", "message": "unknown field", "request_id": "rid-1"},
        "detail": bentoml_body["detail"],
    }
    two = {
        "error": "x",
        "detail": [{"type": "missing", "loc": ["customer_ids"], "msg": "Field required"}] * 2,
    }
    assert with_field(two, None)["error"] == {
        "field": "customer_ids",
        "message": "Field required (and 1 more errors in detail)",
        "request_id": None,
    }
    ours = {"error": {"field": "model", "message": "e", "request_id": "r"}}
    assert with_field(ours, "other") is ours and with_field([1], "r") == [1]
    bad_json = with_field({"error": "x", "detail": [{"loc": [], "msg": "bad json"}]}, None)
    assert bad_json["error"]["field"] == "body"


def test_framework_answers_are_reshaped_and_ours_left_alone():
    not_found = json.loads(shaped_answer(b"Not Found", 404, "rid-2"))
    assert not_found == {"error": {"field": None, "message": "Not Found", "request_id": "rid-2"}}
    empty = json.loads(shaped_answer(b"", 405, None))
    assert empty["error"]["message"] == "Method Not Allowed"
    ours = json.dumps({"error": {"field": "model", "message": "e", "request_id": "r"}}).encode()
    assert shaped_answer(ours, 404, "other") is None
    validation = {"error": "x", "detail": [{"type": "missing", "loc": ["k"], "msg": "required"}]}
    assert (
        json.loads(shaped_answer(json.dumps(validation).encode(), 400, None))["error"]["field"]
        == "k"
    )


def test_a_money_budget_without_a_cost_is_refused_by_the_rules():
    base = {"campaign_id": "c", "value_per_conversion": 1.0}
    with pytest.raises(ValueError, match="cost_per_contact"):
        CampaignRules(**base, cost_per_contact=0.0, max_cost=100.0)
    CampaignRules(**base, cost_per_contact=0.0, max_contacts=100)  # contacts only: fine
    CampaignRules(**base, cost_per_contact=0.5, max_cost=100.0)
    assert "cost" in Budget.model_fields["max_cost"].description


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def server(served_pipeline, tmp_path_factory):
    state = served_pipeline["state"]
    register_copy(state, served_pipeline["logged"]["model_uri"], NAME, ("champion",))
    settings = serving_settings(served_pipeline, NAME, reload_interval_s=0)
    log_path = tmp_path_factory.mktemp("strict") / "server.log"
    srv = Server(server_env(settings, state.home), log_path)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def post(srv: Server, path: str, body: object, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{srv.url}{path}", json=body, headers=headers or USER, timeout=60)


TARGET = {"campaign_id": "strict-1", "channel": "email", "model": "churn", "ranking": NON_CAUSAL}


def assert_refused(response: httpx.Response, field: str, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) <= {"error", "detail"} and set(body["error"]) == {
        "field",
        "message",
        "request_id",
    }
    assert body["error"]["field"] == field, body
    assert (
        body["error"]["message"] and body["error"]["request_id"] == response.headers["x-request-id"]
    )
    return body


@pytest.mark.server
def test_a_misspelt_budget_is_refused_not_ignored(server):
    ok = post(server, "/target", {**TARGET, "budget": {"max_contacts": 100}})
    assert ok.status_code == 200, ok.text
    assert ok.json()["summary"]["contacted"] == 100
    body = assert_refused(
        post(server, "/target", {**TARGET, "budjet": {"max_contacts": 100}}), "budjet"
    )
    assert body["detail"][0]["type"] == "extra_forbidden"
    assert_refused(
        post(server, "/target", {**TARGET, "budget": {"max_contacts": 100, "max_costs": 5.0}}),
        "budget.max_costs",
    )
    assert_refused(post(server, "/score", {"customer_ids": ["C1"], "reason": False}), "reason")


@pytest.mark.server
def test_every_post_route_refuses_unknown_fields_naming_them(server):
    for route, model in body_models().items():
        for path, _ in nested_fields(model):
            body, expected = with_unknown(model, path)
            assert_refused(post(server, route, body), expected)
    for route in ops_post_routes():  # routes without a body: a body or unknown query is refused
        assert_refused(post(server, route, {UNKNOWN: True}, headers=ADMIN), UNKNOWN)
        response = httpx.post(f"{server.url}{route}?{UNKNOWN}=1", headers=ADMIN, timeout=60)
        assert_refused(response, UNKNOWN)
    forced = httpx.post(f"{server.url}/admin/reload?force=true", headers=ADMIN, timeout=120)
    assert forced.status_code == 200 and forced.json()["swapped"] is True, forced.text


@pytest.mark.server
@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({}, "cost_per_contact is not given"),
        ({"cost_per_contact": 0.0}, "cost_per_contact is 0"),
    ],
)
def test_a_money_budget_without_a_cost_is_a_400(server, extra, why):
    body = {**TARGET, "budget": {"max_cost": 50.0}, **extra}
    refused = assert_refused(post(server, "/target", body), "budget.max_cost")
    message = refused["error"]["message"]
    assert why in message and "cost_per_contact" in message
    paid = post(server, "/target", {**body, "cost_per_contact": 0.5})
    assert paid.status_code == 200, paid.text
    assert paid.json()["summary"]["spend"] <= 50.0


@pytest.mark.server
def test_the_served_document_forbids_unknown_fields(server):
    doc = httpx.get(f"{server.url}/docs.json", timeout=30).json()
    schemas = doc["components"]["schemas"]
    for route, model in body_models().items():
        body = doc["paths"][route]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["additionalProperties"] is False, route
        for path, sub in nested_fields(model):
            if path:
                assert schemas[sub.__name__]["additionalProperties"] is False, (route, path)

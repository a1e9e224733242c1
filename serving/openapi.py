"""Corrections to the OpenAPI document BentoML generates, so that it describes what is served.

BentoML's document (``/docs.json``) leaves request bodies optional, drops the null branch of a
response model's top-level optional fields, documents error bodies that differ from the ones it
sends (its 400 has ``detail`` as a list), and knows nothing of the API keys or of the
401/403/404/415 answers of this service. ``patch_openapi`` fixes those, as a pure
function of the generated document; serving.security applies it to the /docs.json response.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

ERROR_SCHEMA = "PatronError"
#: Paths answered without a key (the rest need one; serving.security.is_open is the rule).
SECURITY_SCHEMES = {
    "bearerKey": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
    "headerKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
_ERRORS = {
    "400": "Bad request: the body names the field (`field`, or `detail[].loc`)",
    "401": "A valid API key is needed",
    "403": "An admin API key is needed",
    "404": "Unknown model or offer (the body names the field)",
    "415": "Only application/json bodies are accepted",
    "500": "Unexpected error (details only in the server log)",
    "503": "The online store cannot answer (the body names `model`); a failed reload (`reload`)",
}
#: Routes that answer 503 (a store-backed family's store down; a failed reload).
UNAVAILABLE_PATHS = frozenset({"/score", "/next-best-offer", "/contactable", "/admin/reload"})


#: A whole request body per route, as a campaign system would send it (Swagger's "Try it out"
#: starts from these; tests validate each against its request model, so they cannot drift).
EXAMPLES: dict[str, dict[str, Any]] = {
    "/score": {"customer_ids": ["C0000001", "C0000002"], "model": "churn", "reasons": True},
    "/next-best-offer": {"customer_ids": ["C0000001"], "k": 3, "kind": "cross_sell"},
    "/contactable": {
        "customer_ids": ["C0000001", "C0000002"],
        "channel": "email",
        "model": "churn",
    },
    "/target": {
        "campaign_id": "retention-2025-03",
        "channel": "email",
        "model": "uplift",
        "audience": {"segments": ["At risk", "Can't lose them"]},
        "budget": {"max_contacts": 500},
        "cost_per_contact": 0.5,
        "value_per_conversion": 40.0,
        "control_fraction": 0.1,
        "test_cell_fraction": 0.05,
        "include_customers": False,
    },
    "/campaigns/plan": {"campaign_name": "retention", "selected_only": True, "max_rows": 100},
    "/campaigns/{plan_id}/responses": {
        "responses": [
            {"customer_id": "C0000042", "responded": True, "value": 40.0},
            {"customer_id": "C0000043", "responded": False, "reason": "price"},
        ]
    },
}


def _project_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("patron")
    except PackageNotFoundError:
        return "0+unknown"


def error_schema() -> dict[str, Any]:
    """Every error body this service sends: ours and BentoML's validation error."""
    return {
        "type": "object",
        "title": ERROR_SCHEMA,
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["field", "message", "request_id"],
                "properties": {
                    "field": {
                        "type": "string",
                        "nullable": True,
                        "description": "the request field at fault (null: none is)",
                    },
                    "message": {"type": "string", "description": "what is wrong"},
                    "request_id": {
                        "type": "string",
                        "nullable": True,
                        "description": "the answer's x-request-id",
                    },
                },
            },
            "detail": {
                "type": "array",
                "description": "pydantic errors (type, loc, msg); never the input value",
                "items": {"type": "object"},
            },
        },
    }


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}
        },
    }


def _response_schemas(doc: dict[str, Any], title: str) -> list[dict[str, Any]]:
    """Every place a response model's schema sits: its component and inline 200 answers."""
    found = []
    component = doc.get("components", {}).get("schemas", {}).get(title)
    if component is not None:
        found.append(component)
    for item in doc.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict):
                continue
            content = op.get("responses", {}).get("200", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema", {})
            if schema.get("title") == title:
                found.append(schema)
    return found


def _restore_nullable(doc: dict[str, Any], models: Sequence[type[BaseModel]]) -> None:
    """Put back the null branch BentoML drops from a response model's top-level fields."""
    ref = "#/components/schemas/{model}"
    for model in models:
        props = model.model_json_schema(ref_template=ref)["properties"]
        nullable = {k: v for k, v in props.items() if {"type": "null"} in v.get("anyOf", [])}
        for target in _response_schemas(doc, f"{model.__name__}IODescriptor"):
            target.setdefault("properties", {}).update(copy.deepcopy(nullable))


def patch_openapi(
    doc: dict[str, Any],
    open_paths: frozenset[str],
    response_models: Sequence[type[BaseModel]] = (),
) -> dict[str, Any]:
    """A corrected copy of BentoML's OpenAPI document."""
    out = copy.deepcopy(doc)
    components = out.setdefault("components", {})
    components.setdefault("schemas", {})[ERROR_SCHEMA] = error_schema()
    _restore_nullable(out, response_models)
    components["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
    info = out.setdefault("info", {})
    info.update(
        {
            "title": "Patron",
            "version": _project_version(),
            "contact": {"name": "Patron"},
            "description": (
                "Patron campaign API: scores, next-best offers, campaign targeting and plans "
                "from the MLflow registry's models. Send an API key as `Authorization: Bearer "
                "<key>` or `X-API-Key`. Every error is `{error, field, request_id}` (4xx: the "
                "request; 503: a store or reload problem, the old models still answer)."
            ),
        }
    )
    for path, example in EXAMPLES.items():
        op = out.get("paths", {}).get(path, {}).get("post")
        content = (op or {}).get("requestBody", {}).get("content", {}).get("application/json")
        if content is not None:
            content["example"] = copy.deepcopy(example)
            content.pop("examples", None)
    for path, item in out.get("paths", {}).items():
        if path in open_paths:
            continue
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            op["security"] = [{"bearerKey": []}, {"headerKey": []}]
            responses = op.setdefault("responses", {})
            codes = ["400", "401", "404", "500"]
            if method == "post" and "requestBody" in op:
                op["requestBody"]["required"] = True
                codes.append("415")
            if path.startswith("/admin/"):
                codes.append("403")
            if path in UNAVAILABLE_PATHS:
                codes.append("503")
            for code in codes:
                responses[code] = _error_response(_ERRORS[code])
    return out

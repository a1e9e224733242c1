"""The corrections applied to BentoML's OpenAPI document (pure, no server)."""

from __future__ import annotations

from serving.openapi import ERROR_SCHEMA, patch_openapi
from serving.schemas import TargetResponse
from serving.security import OPEN_PATHS

DOC = {
    "openapi": "3.0.2",
    "components": {
        "schemas": {"TargetResponseIODescriptor": {"properties": {"offer_id": {"type": "string"}}}}
    },
    "paths": {
        "/target": {
            "post": {
                "requestBody": {"content": {}},
                "responses": {
                    "200": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "title": "TargetResponseIODescriptor",
                                    "properties": {"offer_id": {"type": "string"}},
                                }
                            }
                        }
                    }
                },
            }
        },
        "/models": {"get": {"responses": {"200": {}}}},
        "/admin/reload": {"post": {"responses": {"200": {}}}},
        "/healthz": {"get": {"responses": {"200": {}}}},
    },
}


def test_patched_document_requires_bodies_keys_and_documents_errors():
    out = patch_openapi(DOC, OPEN_PATHS, [TargetResponse])
    target = out["paths"]["/target"]["post"]
    assert target["requestBody"]["required"] is True
    assert {"400", "401", "404", "415", "500"} <= set(target["responses"])
    assert target["security"] == [{"bearerKey": []}, {"headerKey": []}]
    assert "403" in out["paths"]["/admin/reload"]["post"]["responses"]
    assert "security" not in out["paths"]["/healthz"]["get"]  # open path
    assert set(out["components"]["securitySchemes"]) == {"bearerKey", "headerKey"}
    error = out["components"]["schemas"][ERROR_SCHEMA]
    assert error["required"] == ["error"] and error["properties"]["detail"]["type"] == "array"
    assert error["properties"]["error"]["required"] == ["field", "message", "request_id"]
    offer = out["components"]["schemas"]["TargetResponseIODescriptor"]["properties"]["offer_id"]
    assert {"type": "null"} in offer["anyOf"]
    inline = target["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"type": "null"} in inline["properties"]["offer_id"]["anyOf"]
    assert DOC["paths"]["/target"]["post"]["requestBody"] == {"content": {}}  # input untouched


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_the_services_document_refuses_unknown_fields_and_resolves():
    """The document of the real service, patched: request bodies and their nested models say
    additionalProperties: false (the service refuses unknown fields), every $ref resolves, and
    schemathesis can build every operation from it."""
    import json

    import schemathesis

    from serving.schemas import OffersResponse, ScoreResponse
    from serving.service import Patron

    doc = json.loads(json.dumps(Patron.openapi_spec.asdict()))
    out = patch_openapi(doc, OPEN_PATHS, [ScoreResponse, OffersResponse, TargetResponse])
    schemas = out["components"]["schemas"]
    for api in Patron.apis.values():
        body = out["paths"][api.route]["post"]["requestBody"]
        schema = body["content"]["application/json"]["schema"]
        assert body["required"] is True and schema["additionalProperties"] is False, api.route
        for ref in _refs(schema):
            assert schemas[ref.rsplit("/", 1)[-1]]["additionalProperties"] is False, ref
    for ref in _refs(out):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[-1] in schemas
    operations = [
        type(op).__name__ for op in schemathesis.openapi.from_dict(out).get_all_operations()
    ]
    assert operations and set(operations) == {"Ok"}, operations


def test_the_target_document_labels_the_basis_and_allows_no_responses():
    """/target's request takes the explicit ranking; its answer names the basis with the value
    layer's own strings, and expected_responses may be null (a churn probability)."""
    import json

    from models.decisions.value import BASIS_NON_CAUSAL, BASIS_UPLIFT
    from serving.service import Patron

    doc = json.loads(json.dumps(Patron.openapi_spec.asdict()))
    out = patch_openapi(doc, OPEN_PATHS, [TargetResponse])
    schemas = out["components"]["schemas"]
    op = out["paths"]["/target"]["post"]
    request = op["requestBody"]["content"]["application/json"]["schema"]
    assert request["properties"]["ranking"]["$ref"].endswith("/Ranking")
    ranking = schemas["Ranking"]
    assert ranking["additionalProperties"] is False
    assert ranking["properties"]["basis"]["enum"] == ["uplift", "non_causal_score"]
    answer = op["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    assert answer["basis"]["enum"] == [BASIS_UPLIFT, BASIS_NON_CAUSAL]
    assert answer["score_kind"]["enum"] == ["uplift", "response_probability", "churn_probability"]
    assert {"type": "null"} in answer["warning"]["anyOf"]
    responses = schemas["TargetSummary"]["properties"]["expected_responses"]
    assert {"type": "null"} in responses["anyOf"]


def test_every_api_has_a_whole_body_example_its_model_accepts_and_the_project_is_named():
    import json

    from serving.openapi import EXAMPLES, _project_version
    from serving.schemas import (
        ContactableRequest,
        OffersRequest,
        PlanRequest,
        ResponsesRequest,
        ScoreRequest,
        TargetRequest,
    )
    from serving.service import Patron

    models = {
        "/score": ScoreRequest,
        "/next-best-offer": OffersRequest,
        "/contactable": ContactableRequest,
        "/target": TargetRequest,
        "/campaigns/plan": PlanRequest,
        "/campaigns/{plan_id}/responses": ResponsesRequest,
    }
    assert set(EXAMPLES) == set(models)
    for route, example in EXAMPLES.items():
        models[route].model_validate(example)  # unknown fields and bad values would raise
    doc = json.loads(json.dumps(Patron.openapi_spec.asdict()))
    out = patch_openapi(doc, OPEN_PATHS, [])
    for api in Patron.apis.values():
        content = out["paths"][api.route]["post"]["requestBody"]["content"]["application/json"]
        assert content["example"] == EXAMPLES[api.route], api.route
    assert out["info"]["title"] == "Patron" and out["info"]["version"] == _project_version()
    assert out["info"]["version"] not in ("None", "") and "BentoML" not in json.dumps(out["info"])


def test_serving_schemas_import_neither_scikit_learn_nor_duckdb():
    """The published segment names come from features.segment_names, a module without imports:
    the schemas of a server process load without scikit-learn or DuckDB."""
    import subprocess
    import sys

    code = (
        "import sys; import serving.schemas; "
        "print(sorted(m for m in ('sklearn', 'duckdb') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

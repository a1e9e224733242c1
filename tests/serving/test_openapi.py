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
    offer = out["components"]["schemas"]["TargetResponseIODescriptor"]["properties"]["offer_id"]
    assert {"type": "null"} in offer["anyOf"]
    inline = target["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"type": "null"} in inline["properties"]["offer_id"]["anyOf"]
    assert DOC["paths"]["/target"]["post"]["requestBody"] == {"content": {}}  # input untouched

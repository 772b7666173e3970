"""The proxy's OpenAPI description, served at ``GET /openapi.json``.

What the proxy accepts is OpenAI's request schemas (``cglib.openai_requests``, the
ones ``request_checks`` validates against), so the description is built from them:
the three metered endpoints take OpenAI's request bodies; every route answers errors
in OpenAI's shape. Tools read it (the fuzz tests drive schemathesis with it); it holds
nothing secret and is the same for every caller.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from cglib.openai_requests import ROOTS
from cglib.openai_requests._schema import load_document

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ERRORS = {
    str(status): {
        "description": what,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for status, what in (
        (400, "invalid request"),
        (401, "no or bad key"),
        (403, "key not usable"),
        (404, "unknown model"),
        (408, "body not sent in time"),
        (413, "body too large"),
        (429, "rate limited, or credits cannot cover the request"),
        (502, "the provider failed"),
        (503, "a gateway service is unavailable"),
    )
}
_PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions", "embeddings": "/v1/embeddings"}


def _metered(endpoint: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": f"create_{endpoint}",
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ROOTS[endpoint]}"}}},
            },
            "responses": {
                "200": {"description": "the provider's answer (JSON, or an SSE stream when `stream`)"},
                **_ERRORS,
            },
        }
    }


@functools.cache
def description() -> dict[str, Any]:
    document = load_document()
    # OpenAI's definitions, with their references pointed at components/schemas
    schemas = json.loads(json.dumps(document["definitions"]).replace('"#/definitions/', '"#/components/schemas/'))
    models = {
        "get": {
            "operationId": "list_models",
            "security": [{"bearer": []}],
            "responses": {"200": {"description": "the models the key may use"}, **_ERRORS},
        }
    }
    model = {
        "get": {
            "operationId": "retrieve_model",
            "security": [{"bearer": []}],
            "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "one model the key may use"}, **_ERRORS},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Creditgate gateway (OpenAI-compatible)",
            "version": "1",
            "description": "OpenAI's API for chat completions, completions, embeddings and models, "
            "metered per virtual key. Request schemas: OpenAI's "
            f"({document['x-source'].get('package', '')} "
            f"{document['x-source'].get('version', '')}).",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**schemas, "Error": _ERROR},
        },
        "paths": {
            **{path: _metered(endpoint) for endpoint, path in _PATHS.items()},
            "/v1/models": models,
            "/v1/models/{model}": model,
        },
    }

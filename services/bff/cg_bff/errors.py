"""The management API's one error shape, from one place.

Every refusal is ``{"error": {"code", "message", "fields"}}``: ``code`` a stable
snake_case word a program can switch on, ``message`` a sentence for people, ``fields``
a map from a request field (``budget_credits``, ``billing.profit_multiplier``) to what is
wrong with it (empty when the error is not about one field). Routes raise ``ApiError``;
``install_handlers`` renders it and turns FastAPI's validation errors, unknown routes and
any unexpected exception (a 500 that names the request id, never a stack trace) into the
same shape.

| status | code | when |
|---|---|---|
| 400 | invalid_request, idempotency_key_required, ... | the request is malformed (``fields`` says where) |
| 401 | unauthenticated | no valid session or token |
| 403 | forbidden, csrf_failed | signed in, but not allowed (role, scope, CSRF) |
| 404 | not_found | no such thing, or not yours (never says which) |
| 409 | conflict | the state forbids it (a revoked key, a used invite, a replayed key) |
| 429 | too_many_attempts | sign-in throttled (``Retry-After``) |
| 503 | unavailable | keys or the ledger is down (``Retry-After``) |
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"error": {"code": self.code, "message": self.message, "fields": self.fields}},
            status_code=self.status,
            headers=self.headers,
        )


def invalid(message: str, fields: dict[str, str] | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, code, message, fields)


def unauthenticated(message: str = "Sign in, or send a management API token.") -> ApiError:
    return ApiError(401, "unauthenticated", message, headers={"WWW-Authenticate": "Bearer"})


def forbidden(message: str = "You may not do this.", code: str = "forbidden") -> ApiError:
    return ApiError(403, code, message)


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"No such {what}.")


def conflict(message: str) -> ApiError:
    return ApiError(409, "conflict", message)


def unavailable(what: str) -> ApiError:
    return ApiError(
        503, "unavailable", f"The {what} service is unavailable; retry shortly.", headers={"Retry-After": "1"}
    )


# ERROR is the schema of every error answer, for the OpenAPI description.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "fields"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        }
    },
}


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) or "request"


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields: dict[str, str] = {}
        for err in exc.errors():
            fields.setdefault(_field_name(tuple(err.get("loc", ()))), str(err.get("msg", "invalid")))
        return invalid("The request is not valid.", fields).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return ApiError(404, "not_found", f"Unknown route: {request.method} {request.url.path}.").response()
        if exc.status_code == 405:
            return ApiError(405, "method_not_allowed", f"{request.method} is not allowed here.").response()
        return ApiError(exc.status_code, "http_error", str(exc.detail)).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", "")
        log.exception("unhandled error", extra={"request_id": request_id, "path": request.url.path})
        return ApiError(500, "internal", f"Internal error. Request id: {request_id}.").response()

"""Errors in OpenAI's shape, from one place.

Everything the proxy refuses is an ``APIError`` rendered as
``{"error": {"message", "type", "param", "code"}}`` with the right status. The
handlers below also cover malformed requests, unknown routes and any unexpected
exception (a 500 that names the request id and never shows a stack trace).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def missing_key() -> APIError:
    return APIError(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization header "
        "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        code="missing_api_key",
    )


def invalid_key(presented: str) -> APIError:
    shown = presented[:8] + "*" * 4 + presented[-4:] if len(presented) > 12 else "***"
    return APIError(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")


def key_not_usable(status: str) -> APIError:
    return APIError(403, f"This API key is {status} and cannot be used.", type="permission_error", code=f"key_{status}")


def partner_suspended() -> APIError:
    return APIError(
        403,
        "The account this API key belongs to is suspended; its keys cannot be used until it is resumed.",
        type="permission_error",
        code="partner_suspended",
    )


def model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def insufficient_quota(detail: str = "") -> APIError:
    msg = "You exceeded your current quota: this key's credits cannot cover the request."
    return APIError(429, f"{msg} {detail}".strip(), type="insufficient_quota", code="insufficient_quota")


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def body_cut_off() -> APIError:
    return APIError(400, "The request body ended before it was complete.", code="incomplete_body")


def body_timeout(timeout_s: float) -> APIError:
    """408 for a body that did not arrive in time; the connection is closed after it
    (the rest of that body could still come and be read as a next request)."""
    return APIError(
        408,
        f"The request body was not received within {timeout_s:g} seconds.",
        code="request_timeout",
        headers={"Connection": "close"},
    )


def request_too_large(limit_bytes: int) -> APIError:
    return APIError(
        413,
        f"The request body is too large: this gateway accepts at most {limit_bytes} bytes.",
        code="request_too_large",
    )


def service_unavailable(what: str) -> APIError:
    return APIError(
        503,
        f"The gateway's {what} service is unavailable. Please retry shortly.",
        type="server_error",
        code="service_unavailable",
        headers={"Retry-After": "1"},
    )


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return bad_request(f"Invalid request: {first.get('msg', 'malformed body')}", param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"Unknown request URL: {request.method} {request.url.path}."
            return APIError(404, message, code="unknown_url").response()
        if exc.status_code == 405:
            return APIError(405, f"Method {request.method} is not allowed for {request.url.path}.").response()
        return APIError(exc.status_code, str(exc.detail)).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", "")
        log.exception("unhandled error", extra={"request_id": request_id})
        return APIError(
            500,
            f"The gateway had an internal error. Request id: {request_id}.",
            type="server_error",
        ).response()

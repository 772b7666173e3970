"""The BFF's calls to keys and the ledger, over gRPC, with their errors in the API's words.

``Backends.call(stub_method, request)`` makes one call with the BFF's deadline and turns a
gRPC failure into an ``ApiError``:

| gRPC | API |
|---|---|
| INVALID_ARGUMENT, OUT_OF_RANGE | 400 invalid_request, ``fields`` from keys' ``field: message`` |
| NOT_FOUND | 404 not_found (another tenant's object looks exactly like none) |
| PERMISSION_DENIED | 403 forbidden |
| FAILED_PRECONDITION, ABORTED, ALREADY_EXISTS | 409 conflict (the message says why) |
| UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, CANCELLED | 503 unavailable |
| anything else | raised as is (a 500 that names the request id) |
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from cg_bff import errors
from cglib.grpc_client import TRANSIENT
from creditgate.keys.v1 import keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2_grpc

Resp = TypeVar("Resp")


def _fields(details: str) -> dict[str, str]:
    """keys and the ledger say ``field: what is wrong``; that becomes ``{field: what}``."""
    field, sep, message = details.partition(": ")
    if sep and field and " " not in field and len(field) <= 80:
        return {field: message}
    return {}


@dataclass
class Backends:
    # the asyncio channel's stubs (their calls are awaitable)
    keys: keys_pb2_grpc.KeysServiceAsyncStub
    ledger: ledger_pb2_grpc.LedgerServiceAsyncStub
    ledger_admin: ledger_pb2_grpc.LedgerAdminServiceAsyncStub
    timeout_s: float = 5.0
    ledger_admin_token: str = ""

    async def call(self, method: Callable[..., Awaitable[Resp]], request: Any, what: str = "") -> Resp:
        try:
            return await method(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as e:
            raise to_api_error(e, what) from None

    async def admin_call(self, method: Callable[..., Awaitable[Resp]], request: Any) -> Resp:
        """A LedgerAdminService call, with the admin token."""
        try:
            return await method(
                request, timeout=self.timeout_s, metadata=(("x-cg-admin-token", self.ledger_admin_token),)
            )
        except grpc.aio.AioRpcError as e:
            raise to_api_error(e, "") from None


def to_api_error(e: grpc.aio.AioRpcError, what: str = "") -> Exception:
    code, details = e.code(), e.details() or ""
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
        return errors.invalid(details or "The request is not valid.", _fields(details))
    if code == grpc.StatusCode.NOT_FOUND:
        return errors.not_found(what or "resource")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return errors.forbidden(details or "You may not do this.")
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED, grpc.StatusCode.ALREADY_EXISTS):
        return errors.conflict(details or "The current state does not allow this.")
    if code in TRANSIENT:
        return errors.unavailable("keys or ledger")
    return e

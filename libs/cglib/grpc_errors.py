"""Domain errors -> gRPC status codes, in one server interceptor.

Each service raises its own errors (``cg_keys.errors``, ``cg_ledger.errors``) and says once,
beside its servicer, which status code each one is:

    ERROR_CODES = {NotFound: grpc.StatusCode.NOT_FOUND, ...}
    create_server(addr, register, names, error_codes=ERROR_CODES)

Every call of that server then answers:

- a domain error: its status code, with the error's message as the details (a subclass
  takes its nearest mapped base's code);
- an abort the handler made itself (``context.abort``), or a status it set before it
  raised (``context.set_code``): as it is;
- anything else: logged with its stack trace, and answered INTERNAL "internal error",
  so no trace nor exception text reaches the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import grpc

from cglib.grpc_intercept import UnaryHandler, UnaryInterceptor

log = logging.getLogger(__name__)

ErrorCodes = Mapping[type[Exception], grpc.StatusCode]

INTERNAL_DETAILS = "internal error"


def status_for(error: BaseException, codes: ErrorCodes) -> grpc.StatusCode | None:
    """The code ``codes`` gives ``error``'s class or its nearest base; None if unmapped."""
    for cls in type(error).__mro__:
        if issubclass(cls, Exception) and (code := codes.get(cls)) is not None:
            return code
    return None


class ErrorMappingInterceptor(UnaryInterceptor):
    def __init__(self, codes: ErrorCodes) -> None:
        self.codes = dict(codes)

    def wrap(self, inner: UnaryHandler, method: str) -> UnaryHandler:
        async def mapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await inner(request, context)
            except grpc.aio.AbortError:
                raise  # the handler aborted with a status of its own
            except Exception as e:
                code = status_for(e, self.codes)
                if code is not None:
                    await context.abort(code, str(e))
                if context.code() not in (None, grpc.StatusCode.OK):
                    # the handler set its answer before it raised (the generated base
                    # servicer's UNIMPLEMENTED): gRPC sends that one
                    raise
                log.exception("unexpected error in a gRPC handler", extra={"method": method})
                await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_DETAILS)

        return mapped

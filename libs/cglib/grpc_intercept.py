"""The shape our gRPC server interceptors share: each wraps the handler of every unary call.

A subclass says what to wrap a handler in (``wrap``); calls of other kinds (health's watch
stream) and unknown methods pass as they are, and the wrapped handler keeps the method's
(de)serializers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import grpc

# What an aio server's unary handler is (grpc's stubs type it as the synchronous server's).
UnaryHandler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
# (a string: grpc.RpcMethodHandler is generic only to the type checker)
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable["grpc.RpcMethodHandler[Any, Any] | None"]]


class UnaryInterceptor(grpc.aio.ServerInterceptor):
    def wrap(self, inner: UnaryHandler, method: str) -> UnaryHandler:
        """The handler to run instead of ``inner`` for ``method`` ("/package.Service/Method")."""
        raise NotImplementedError

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        wrapped = self.wrap(cast(UnaryHandler, handler.unary_unary), handler_call_details.method)
        return grpc.unary_unary_rpc_method_handler(
            wrapped, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )

"""Which service may call which method: one table per gRPC server, checked per call
against the caller's certificate (its Subject CN, ``cglib.tls``), in one interceptor.

A service states its table once, beside its servicer, by method name::

    POLICY = policy(ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"], {
        "Deposit": {BFF},
        "Reserve": {PROXY},
        ...
    })

``policy`` refuses a table that leaves out one of the service's methods or names one it
does not have, or a caller that is not a service, so a new RPC cannot be forgotten (the
service then does not start). With mutual TLS on, ``create_server`` puts
``AuthorizationInterceptor`` in front of every call:

- ``grpc.health.v1.Health``: open to every caller, on both ports (probes);
- every other method, reflection included: only over the TLS port, from a certificate
  whose identity the table lists for that method; else PERMISSION_DENIED (logged), and
  the handler never runs. A caller with no certificate identity (the plaintext health
  port) gets UNAUTHENTICATED.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from cglib.tls import IDENTITIES

log = logging.getLogger(__name__)

# full method path ("/package.Service/Method") -> the identities that may call it
Policy = Mapping[str, frozenset[str]]

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIXES = ("/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")
CN_PROPERTY = "x509_common_name"


def policy(service: ServiceDescriptor, callers: Mapping[str, Iterable[str]]) -> Policy:
    """The table of one gRPC service: every method of ``service`` -> who may call it."""
    methods = {m.name for m in service.methods}
    missing, unknown = sorted(methods - set(callers)), sorted(set(callers) - methods)
    problems = []
    if missing:
        problems.append(f"no entry for {', '.join(missing)} (say which services may call it; none is an answer)")
    if unknown:
        problems.append(f"{', '.join(unknown)} is not a method of it")
    if problems:
        raise ValueError(f"authorization table of {service.full_name}: {'; '.join(problems)}")
    table: dict[str, frozenset[str]] = {}
    for name, who in callers.items():
        allowed = frozenset(who)
        if strangers := allowed - IDENTITIES:
            raise ValueError(f"authorization table of {service.full_name}.{name}: {sorted(strangers)} is not a service")
        table[f"/{service.full_name}/{name}"] = allowed
    return table


def merge(*tables: Policy) -> Policy:
    """One server's table from its services' tables."""
    merged: dict[str, frozenset[str]] = {}
    for table in tables:
        merged.update(table)
    return merged


def caller_identity(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The Subject CN of the caller's verified certificate; None without one (plaintext)."""
    first = next(iter(context.auth_context().get(CN_PROPERTY) or ()), None)
    return first.decode("utf-8", "replace") if first is not None else None


class AuthorizationInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, table: Policy) -> None:
        self.table = dict(table)

    def _allowed(self, method: str) -> frozenset[str] | None:
        """Who may call ``method``: None means any caller with a certificate (reflection)."""
        if method.startswith(REFLECTION_PREFIXES):
            return None
        return self.table.get(method, frozenset())

    async def _check(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        caller = caller_identity(context)
        if caller is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required (this port serves health only)"
            )
        allowed = self._allowed(method)
        if allowed is not None and caller not in allowed:
            log.warning("grpc call refused: caller not allowed", extra={"method": method, "caller": caller})
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method} may not be called by {caller!r}")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        return self._guarded(method, handler)

    def _guarded(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        check = self._check
        des, ser = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary is not None:
            uu = cast(Callable[[Any, Any], Awaitable[Any]], handler.unary_unary)

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await check(method, context)
                return await uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, des, ser)
        if handler.stream_unary is not None:
            su = cast(Callable[[Any, Any], Awaitable[Any]], handler.stream_unary)

            async def stream_unary(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await check(method, context)
                return await su(requests, context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, des, ser)
        # the streaming answers: an async generator, or a coroutine that answers with context.write
        inner = cast(Callable[[Any, Any], Any], handler.unary_stream or handler.stream_stream)

        async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            await check(method, context)
            answer = inner(request, context)
            if inspect.isawaitable(answer):
                await answer
                return
            async for item in answer:
                yield item

        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(streaming, des, ser)
        return grpc.stream_stream_rpc_method_handler(streaming, des, ser)

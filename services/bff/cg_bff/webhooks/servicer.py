"""``creditgate.bff.v1.WebhookService``: the worker's calls (proto <-> ``service``).

Its answers hold signing secrets: with ``CG_BFF_INTERNAL_TOKEN`` set, every call must carry
it as the metadata ``x-cg-internal-token`` (compared in constant time), or is refused
PERMISSION_DENIED. Domain errors become status codes through ``ERROR_CODES`` (the server's
error interceptor).
"""

from __future__ import annotations

import hmac
from typing import Any

import grpc

from cg_bff.webhooks.service import InvalidArgument, Webhooks
from cg_bff.webhooks.store import NotFound
from creditgate.bff.v1 import bff_pb2, bff_pb2_grpc

SERVICE_NAME = bff_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name
TOKEN_HEADER = "x-cg-internal-token"


class PermissionDenied(Exception):
    pass


ERROR_CODES = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}


class WebhookServicer(bff_pb2_grpc.WebhookServiceServicer):
    def __init__(self, webhooks: Webhooks, token: str) -> None:
        self.webhooks = webhooks
        self.token = token.encode()

    def _check(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if not self.token:
            return
        given = dict(context.invocation_metadata() or ()).get(TOKEN_HEADER, "")
        if not hmac.compare_digest(str(given).encode(), self.token):
            raise PermissionDenied("the internal token is missing or wrong")

    async def ClaimDelivery(
        self, request: bff_pb2.ClaimDeliveryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bff_pb2.ClaimDeliveryResponse:
        self._check(context)
        return await self.webhooks.claim(request)

    async def RecordAttempt(
        self, request: bff_pb2.RecordAttemptRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bff_pb2.RecordAttemptResponse:
        self._check(context)
        return await self.webhooks.record(request)

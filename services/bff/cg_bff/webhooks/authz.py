"""Who may call the BFF's internal gRPC service under mutual TLS (``cglib.grpc_authz``):
only the worker delivers webhooks (cg_worker.webhook_delivery). The internal token
(``CG_BFF_INTERNAL_TOKEN``) is still asked on top of it when set."""

from __future__ import annotations

from cglib.grpc_authz import Policy, policy
from cglib.tls import WORKER
from creditgate.bff.v1 import bff_pb2

POLICY: Policy = policy(
    bff_pb2.DESCRIPTOR.services_by_name["WebhookService"],
    {"ClaimDelivery": {WORKER}, "RecordAttempt": {WORKER}},
)

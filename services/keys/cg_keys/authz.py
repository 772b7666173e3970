"""Who may call each keys method, under mutual TLS (``cglib.grpc_authz``): the services
whose code calls it today. The proxy only authenticates keys; the worker reads keys and
applies its rules (auto top-up, suspension below the deposit line, exhaustion); the BFF
manages partners, customers and keys for signed-in users."""

from __future__ import annotations

from cglib.grpc_authz import Policy, policy
from cglib.tls import BFF, PROXY, WORKER
from creditgate.keys.v1 import keys_pb2

POLICY: Policy = policy(
    keys_pb2.DESCRIPTOR.services_by_name["KeysService"],
    {
        # the request path (cg_proxy.auth)
        "AuthenticateKey": {PROXY},
        # partners and customers: the BFF's admin and partner pages
        "CreatePartner": {BFF},
        "GetPartner": {BFF},
        "ListPartners": {BFF},
        "UpdatePartner": {BFF},
        "UpdateSelfService": {BFF},
        "CreateCustomer": {BFF},
        "UpdateCustomer": {BFF},
        "GetCustomer": {BFF},
        "ListCustomers": {BFF},
        "ListModels": {BFF},
        # keys: the BFF for users; the worker's rules (cg_worker.rules, cg_worker.webhook_events)
        "QuoteKey": {BFF},
        "CreateKey": {BFF},
        "CreateCustomerKey": {BFF},
        "GetKey": {BFF, WORKER},
        "ListKeys": {BFF, WORKER},
        "UpdateKey": {BFF},
        "RegenerateKey": {BFF},
        "RevokeKey": {BFF},
        "SuspendKey": {BFF, WORKER},
        "ResumeKey": {BFF, WORKER},
        "TopUpKey": {BFF, WORKER},
        "MarkKeyExhausted": {WORKER},
    },
)

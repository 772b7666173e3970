"""Who may call each ledger method, under mutual TLS (``cglib.grpc_authz``): the services
whose code calls it today, and no other. Anything that moves money into an account from
outside (``Deposit``) or between a partner and its keys and customers is the BFF's (acting
for a signed-in admin or partner) or the keys service's (creating, topping up, revoking a
key); the request path's holds and settlements are the proxy's. A method no service calls
is callable by none (an empty set), until a caller needs it."""

from __future__ import annotations

from cglib.grpc_authz import Policy, merge, policy
from cglib.tls import BFF, KEYS, PROXY, WORKER
from creditgate.ledger.v1 import ledger_pb2

NOBODY: frozenset[str] = frozenset()

LEDGER_SERVICE = policy(
    ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"],
    {
        # money in from outside: the platform admin's deposit (bff routes/admin.py)
        "Deposit": {BFF},
        "Transfer": NOBODY,
        # the request path (cg_proxy.ledger_client, cg_proxy.lease_client)
        "Reserve": {PROXY},
        "Settle": NOBODY,  # the proxy settles in batches
        "SettleBatch": {PROXY},
        "Void": {PROXY},
        "AcquireLease": {PROXY},
        "ExtendLease": {PROXY},
        "ReleaseLease": {PROXY},
        "SettleLeased": {PROXY},
        # reads
        "GetBalance": {KEYS, WORKER},
        "GetBalances": {KEYS, BFF},
        "ListTransfers": {BFF},
        "Quote": NOBODY,
        "BillingPreview": {BFF},
        # a partner's money to its customers and keys
        "GrantAiCredits": {BFF},
        "FundKey": {KEYS},
        "QuoteKeyFunding": {KEYS},
        "RefundKey": {KEYS},
        "HoldKeyDeposit": {KEYS},
        "ReleaseKeyDeposit": {KEYS},
        "ExpireReservations": NOBODY,  # the ledger voids expired holds itself
    },
)

# The operators' calls: the BFF's admin pages (which also need the ledger's admin token).
LEDGER_ADMIN_SERVICE = policy(
    ledger_pb2.DESCRIPTOR.services_by_name["LedgerAdminService"],
    {"AuditBooks": {BFF}, "ListAccounts": {BFF}},
)

POLICY: Policy = merge(LEDGER_SERVICE, LEDGER_ADMIN_SERVICE)

"""The tenant API's shared pieces (partner, customer and platform admin routes):

- ``idempotency``: the Idempotency-Key's first request, so another request under it is a 409;
- ``ledger``: the ledger's account names, balances and the partner's statement;
- ``keylist``: filtering, sorting and cursor-paging a partner's keys;
- ``payments``: where money comes into a partner's balance (the payment hook).
"""

from __future__ import annotations

from fastapi import Request

from cg_bff.state import BffState
from creditgate.keys.v1 import keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2_grpc


def state_of(request: Request) -> BffState:
    state: BffState = request.app.state.bff
    return state


def keys_of(state: BffState) -> keys_pb2_grpc.KeysServiceAsyncStub:
    return state.backends.keys


def ledger_of(state: BffState) -> ledger_pb2_grpc.LedgerServiceAsyncStub:
    return state.backends.ledger


def ledger_admin_of(state: BffState) -> ledger_pb2_grpc.LedgerAdminServiceAsyncStub:
    return state.backends.ledger_admin

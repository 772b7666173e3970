"""The operator-only ``LedgerAdminService``: every account, and the audit of the books.

Every call must carry the gRPC metadata ``x-cg-admin-token`` equal to the ledger's
``CG_LEDGER_ADMIN_TOKEN`` (compared in constant time). With no token configured the
service exists but refuses every call: the books are never readable by accident.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from cg_ledger.audit import Audit
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc

TOKEN_HEADER = "x-cg-admin-token"
INT64 = (-(2**63), 2**63 - 1)


def _int64(value: Any) -> int:  # a raw SQL value: int, Decimal, or a broken book's anything
    """A counter as the proto's int64 (a broken book's value is clamped here; the audit
    reports it as it is)."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    return min(max(number, INT64[0]), INT64[1])


Req = TypeVar("Req")
Resp = TypeVar("Resp")


def _admin_only(
    handler: Callable[[LedgerAdminServicer, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
) -> Callable[[LedgerAdminServicer, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    @functools.wraps(handler)
    async def wrapper(self: LedgerAdminServicer, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        if not self._token:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "admin calls are off: the ledger has no CG_LEDGER_ADMIN_TOKEN"
            )
        given = ""
        for key, value in context.invocation_metadata() or ():
            if key == TOKEN_HEADER:
                given = value if isinstance(value, str) else ""
        if not hmac.compare_digest(given.encode(), self._token):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"a valid {TOKEN_HEADER} is required")
        return await handler(self, request, context)

    return wrapper


def _account_pb(row) -> ledger_pb2.LedgerAccount:
    return ledger_pb2.LedgerAccount(
        id=row.id,
        kind=row.kind,
        unit=row.unit,
        debits_must_not_exceed_credits=bool(row.debits_must_not_exceed_credits),
        debits_pending=_int64(row.debits_pending),
        debits_posted=_int64(row.debits_posted),
        credits_pending=_int64(row.credits_pending),
        credits_posted=_int64(row.credits_posted),
        closed_to=row.closed_to,
        created_at_ms=_int64(row.created_at_ms),
    )


class LedgerAdminServicer(ledger_pb2_grpc.LedgerAdminServiceServicer):
    def __init__(self, audit: Audit, admin_token: str) -> None:
        self.audit = audit
        self._token = admin_token.encode()

    @_admin_only
    async def ListAccounts(
        self, request: ledger_pb2.ListAccountsRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.ListAccountsResponse:
        rows, token = await self.audit.list_accounts(request.page_size, request.page_token, request.kind)
        return ledger_pb2.ListAccountsResponse(accounts=[_account_pb(r) for r in rows], next_page_token=token)

    @_admin_only
    async def AuditBooks(
        self, request: ledger_pb2.AuditBooksRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.AuditBooksResponse:
        report = await self.audit.audit()
        return ledger_pb2.AuditBooksResponse(
            ok=report.ok,
            accounts=report.accounts,
            transfers=report.transfers,
            units=[
                ledger_pb2.UnitTotals(
                    unit=u.unit,
                    accounts=u.accounts,
                    sum_posted=str(u.sum_posted),
                    sum_pending=str(u.sum_pending),
                    external_in=str(u.external_in),
                )
                for u in report.units
            ],
            discrepancies=[
                ledger_pb2.Discrepancy(check=d.check, account=d.account, detail=d.detail) for d in report.discrepancies
            ],
        )

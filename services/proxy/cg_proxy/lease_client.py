"""The lease book's ledger (``leases.LeaseLedger``) over the ledger's gRPC stub."""

from __future__ import annotations

import grpc

from cg_proxy.leases import Granted, LeaseRefused, Terms
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc

# The ledger's answer to a lease it cannot hold (or that is no longer open).
_REFUSED = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)


def _granted(resp: ledger_pb2.LeaseResponse) -> Granted:
    return Granted(
        resp.changed_ucr,
        resp.changed_uai,
        resp.expires_at_unix_ms,
        resp.status,
        resp.granted_requests,
        resp.granted_requests_deadline_unix_ms,
        resp.rate_limit if resp.HasField("rate_limit") else None,
    )


def _slot_fields(terms: Terms, slots: tuple[int, int] | None) -> dict:
    """A rate-limited key's lease call: its limits and the slots wanted."""
    if terms.rate is None or slots is None:
        return {}
    rate = ledger_pb2.RateLimit(key=terms.rate.key, rpm=terms.rate.rpm, tpm=terms.rate.tpm)
    return {"rate_limit": rate, "want_requests": slots[0], "min_requests": slots[1]}


def customer_billing(terms: Terms) -> ledger_pb2.CustomerBilling | None:
    if not terms.customer_account:
        return None
    return ledger_pb2.CustomerBilling(
        customer_account=terms.customer_account,
        revenue_account=terms.revenue_account,
        profit_multiplier=terms.profit_multiplier,
        price_per_ai_credit_cents=terms.price_per_ai_credit_cents,
        floor_usd_per_mtok=terms.floor_usd_per_mtok,
    )


class GrpcLeaseLedger:
    def __init__(self, stub: ledger_pb2_grpc.LedgerServiceAsyncStub, timeout_s: float) -> None:
        self.stub = stub
        self.timeout_s = timeout_s

    async def acquire(
        self,
        lease_id: str,
        terms: Terms,
        want: tuple[int, int],
        least: tuple[int, int],
        ttl_s: int,
        slots: tuple[int, int] | None = None,
    ) -> Granted:
        req = ledger_pb2.AcquireLeaseRequest(
            lease_id=lease_id,
            account=terms.account,
            customer=customer_billing(terms),
            want_ucr=want[0],
            want_uai=want[1],
            min_ucr=least[0],
            min_uai=least[1],
            ttl_seconds=ttl_s,
            **_slot_fields(terms, slots),
        )
        try:
            return _granted(await self.stub.AcquireLease(req, timeout=self.timeout_s))
        except grpc.aio.AioRpcError as e:
            if e.code() in _REFUSED:
                raise LeaseRefused(e.details() or e.code().name) from None
            raise

    async def extend(
        self,
        extension_id: str,
        lease_id: str,
        want: tuple[int, int],
        least: tuple[int, int],
        ttl_s: int,
        slots: tuple[int, int] | None = None,
        terms: Terms | None = None,
    ) -> Granted:
        req = ledger_pb2.ExtendLeaseRequest(
            extension_id=extension_id,
            lease_id=lease_id,
            want_ucr=want[0],
            want_uai=want[1],
            min_ucr=least[0],
            min_uai=least[1],
            ttl_seconds=ttl_s,
            **(_slot_fields(terms, slots) if terms is not None else {}),
        )
        try:
            return _granted(await self.stub.ExtendLease(req, timeout=self.timeout_s))
        except grpc.aio.AioRpcError as e:
            if e.code() in _REFUSED:
                raise LeaseRefused(e.details() or e.code().name) from None
            raise

    async def release(self, release_id: str, lease_id: str, keep: tuple[int, int], return_requests: int = 0) -> Granted:
        req = ledger_pb2.ReleaseLeaseRequest(
            release_id=release_id,
            lease_id=lease_id,
            keep_ucr=keep[0],
            keep_uai=keep[1],
            return_requests=return_requests,
        )
        try:
            return _granted(await self.stub.ReleaseLease(req, timeout=self.timeout_s))
        except grpc.aio.AioRpcError as e:
            if e.code() in _REFUSED:  # no such lease (e.g. an acquire that never arrived)
                raise LeaseRefused(e.details() or e.code().name) from None
            raise

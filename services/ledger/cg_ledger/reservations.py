"""Two-phase reservations: hold an upper bound, then post the real cost.

A reservation holds on the account paying the provider cost (a key budget or, for a
customer-created key, the partner's balance) and, with customer billing, on the
customer's AI credits, both in one transaction. ``settle`` posts the real cost and
releases the rest; a cost above the hold is taken from what is available, never
more (the shortfall is recorded as unpaid, never a negative balance). ``void``
releases everything; ``expire`` voids holds past their expiry, and a settlement that
arrives after that is still posted, once, from what is available, so usage is never lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cg_ledger import accounts, store
from cg_ledger.accounts import USAGE_SINK
from cg_ledger.book import FAILED_FUNDS, check_id, decimal_or_invalid
from cg_ledger.errors import Conflict, InsufficientFunds, InvalidArgument, NotFound
from cglib.faults import crash_point
from cg_ledger.pricing import (
    MAX_UCR,
    CustomerBilling,
    ai_credits_uai,
    customer_price_usd,
    provider_cost_usd,
    usd_to_ucr,
)

R = store.R
MAX_TOKENS = 10**12


@dataclass(frozen=True)
class Billing:
    customer_account: str
    revenue_account: str
    terms: CustomerBilling


@dataclass(frozen=True)
class ReserveOutcome:
    request_id: str
    held_ucr: int
    customer_held_uai: int
    available_ucr: int
    replayed: bool


@dataclass(frozen=True)
class SettleOutcome:
    request_id: str
    held_ucr: int
    charged_ucr: int
    released_ucr: int
    unpaid_ucr: int
    customer_charged_uai: int
    customer_unpaid_uai: int
    price_book_version: str
    replayed: bool


def parse_billing(customer_account: str, revenue_account: str, multiplier: str, cents: str, floor: str) -> Billing:
    customer = accounts.parse(customer_account, "customer.customer_account", kinds={"customer"})
    revenue = accounts.parse(revenue_account, "customer.revenue_account", kinds={"partnerrev"})
    try:
        terms = CustomerBilling(
            decimal_or_invalid(multiplier, "customer.profit_multiplier"),
            decimal_or_invalid(cents, "customer.price_per_ai_credit_cents"),
            decimal_or_invalid(floor, "customer.floor_usd_per_mtok", default="0"),
        )
    except ValueError as e:
        raise InvalidArgument(f"customer.{e}") from e
    return Billing(customer.id, revenue.id, terms)


def _tokens(value: int, field: str) -> int:
    if value < 0 or value > MAX_TOKENS:
        raise InvalidArgument(f"{field}: between 0 and {MAX_TOKENS}")
    return value


def _costs(r_in: str, r_out: str, billing: Billing | None, input_tokens: int, output_tokens: int) -> tuple[int, int]:
    """(provider cost in ucr, customer price in uai) for these token counts."""
    usd = provider_cost_usd(input_tokens, output_tokens, Decimal(r_in), Decimal(r_out))
    ucr = usd_to_ucr(usd)
    uai = 0
    if billing is not None:
        uai = ai_credits_uai(customer_price_usd(usd, input_tokens + output_tokens, billing.terms), billing.terms)
    if ucr > MAX_UCR or uai > MAX_UCR:
        raise InvalidArgument("amount too large")
    return ucr, uai


def _billing_of(r) -> Billing | None:
    if not r.customer_account:
        return None
    return Billing(
        r.customer_account,
        r.revenue_account,
        CustomerBilling(Decimal(r.profit_multiplier), Decimal(r.price_per_ai_credit_cents), Decimal(r.floor_usd_per_mtok)),
    )


class Reservations:
    def __init__(self, engine: AsyncEngine, default_ttl_s: int = 600) -> None:
        self.engine = engine
        self.default_ttl_s = default_ttl_s

    async def reserve(
        self,
        request_id: str,
        account: str,
        model: str,
        input_usd_per_mtok: str,
        output_usd_per_mtok: str,
        price_book_version: str,
        max_input_tokens: int,
        max_output_tokens: int,
        ttl_s: int = 0,
        billing: Billing | None = None,
    ) -> ReserveOutcome:
        check_id(request_id, "request_id")
        payer = accounts.parse(account, kinds={"key", "partner"})
        in_price = decimal_or_invalid(input_usd_per_mtok, "price.input_usd_per_mtok")
        out_price = decimal_or_invalid(output_usd_per_mtok, "price.output_usd_per_mtok")
        _tokens(max_input_tokens, "max_input_tokens")
        _tokens(max_output_tokens, "max_output_tokens")
        if ttl_s < 0 or ttl_s > 7 * 24 * 3600:
            raise InvalidArgument("ttl_seconds: between 0 and one week")
        held, held_uai = _costs(str(in_price), str(out_price), billing, max_input_tokens, max_output_tokens)
        ttl_s = ttl_s or self.default_ttl_s
        try:
            async with self.engine.begin() as conn:
                existing = (await conn.execute(select(R).where(R.c.request_id == request_id))).first()
                if existing is not None:
                    return await self._replay(conn, existing, payer.id)
                failed = await store.stored_transfer(conn, f"reserve:{request_id}")
                if failed is not None:
                    raise InsufficientFunds(f"request {request_id!r} was refused before: {failed.outcome}")
                available = await store.available(conn, payer.id)
                if not await store.debit(conn, payer.id, pending=held):
                    raise InsufficientFunds(f"account {payer.id!r} has {available} available, needs {held}")
                if billing is not None:
                    have = await store.available(conn, billing.customer_account)
                    if not await store.debit(conn, billing.customer_account, pending=held_uai):
                        raise InsufficientFunds(f"customer has {have} uai available, needs {held_uai}")
                now = store.now_ms()
                await conn.execute(
                    R.insert().values(
                        request_id=request_id,
                        account=payer.id,
                        credit_account=USAGE_SINK,
                        model=model[:120],
                        input_usd_per_mtok=str(in_price),
                        output_usd_per_mtok=str(out_price),
                        price_book_version=price_book_version[:60],
                        held_ucr=held,
                        customer_account=billing.customer_account if billing else "",
                        revenue_account=billing.revenue_account if billing else "",
                        profit_multiplier=str(billing.terms.profit_multiplier) if billing else "",
                        price_per_ai_credit_cents=str(billing.terms.price_per_ai_credit_cents) if billing else "",
                        floor_usd_per_mtok=str(billing.terms.floor_usd_per_mtok) if billing else "",
                        customer_held_uai=held_uai,
                        customer_charged_uai=0,
                        customer_unpaid_uai=0,
                        input_tokens=0,
                        output_tokens=0,
                        status="pending",
                        charged_ucr=0,
                        unpaid_ucr=0,
                        usage_source="",
                        expires_at_ms=now + ttl_s * 1000,
                        created_at_ms=now,
                    )
                )
                await store.insert_transfer(conn, f"reserve:{request_id}", "pending", payer.id, USAGE_SINK, held,
                                            request_id=request_id, memo=model)
                if billing is not None:
                    await store.insert_transfer(conn, f"reserve:{request_id}:customer", "pending",
                                                billing.customer_account, billing.revenue_account, held_uai,
                                                request_id=request_id, memo=model)
                crash_point("reserve:before_commit")
            crash_point("reserve:after_commit")
            return ReserveOutcome(request_id, held, held_uai, available - held, replayed=False)
        except InsufficientFunds:
            await self._store_refusal(request_id, payer.id, held)
            raise
        except IntegrityError:
            async with self.engine.connect() as conn:
                existing = (await conn.execute(select(R).where(R.c.request_id == request_id))).first()
                if existing is None:
                    if await store.stored_transfer(conn, f"reserve:{request_id}") is not None:
                        raise InsufficientFunds(f"request {request_id!r} was refused") from None
                    raise
                return await self._replay(conn, existing, payer.id)

    async def _store_refusal(self, request_id: str, account: str, held: int) -> None:
        try:
            async with self.engine.begin() as conn:
                if (await conn.execute(select(R.c.request_id).where(R.c.request_id == request_id))).first():
                    return  # a concurrent call with this id succeeded; that outcome stands
                await store.insert_transfer(conn, f"reserve:{request_id}", "pending", account, USAGE_SINK, held,
                                            request_id=request_id, outcome=FAILED_FUNDS)
        except IntegrityError:
            pass

    @staticmethod
    async def _replay(conn: AsyncConnection, row, account: str) -> ReserveOutcome:
        if row.account != account:
            raise Conflict(f"request id {row.request_id!r} was reserved on another account")
        return ReserveOutcome(row.request_id, row.held_ucr, row.customer_held_uai,
                              await store.available(conn, account), replayed=True)

    async def settle(self, request_id: str, input_tokens: int, output_tokens: int, usage_source: str) -> SettleOutcome:
        check_id(request_id, "request_id")
        _tokens(input_tokens, "input_tokens")
        _tokens(output_tokens, "output_tokens")
        async with self.engine.begin() as conn:
            r = (await conn.execute(select(R).where(R.c.request_id == request_id).with_for_update())).first()
            if r is None:
                raise NotFound(f"reservation {request_id!r} not found")
            if r.status == "posted":
                return self._settled(r, replayed=True)
            if r.status == "voided":
                raise Conflict(f"reservation {request_id!r} was voided")
            billing = _billing_of(r)
            charge, charge_uai = _costs(r.input_usd_per_mtok, r.output_usd_per_mtok, billing, input_tokens, output_tokens)
            pending = r.status == "pending"  # an expired hold was already released
            held = r.held_ucr if pending else 0
            held_uai = r.customer_held_uai if pending else 0
            paid = await self._post(conn, r.account, held, charge)
            paid_uai = await self._post(conn, r.customer_account, held_uai, charge_uai) if billing else 0
            # credit-only sinks last: they are the hottest rows
            await store.ensure_account(conn, accounts.parse(USAGE_SINK))
            await store.credit(conn, USAGE_SINK, paid)
            if billing:
                await store.ensure_account(conn, accounts.parse(billing.revenue_account))
                await store.credit(conn, billing.revenue_account, paid_uai)
            values = dict(
                status="posted", charged_ucr=paid, unpaid_ucr=charge - paid, customer_charged_uai=paid_uai,
                customer_unpaid_uai=charge_uai - paid_uai, usage_source=usage_source,
                input_tokens=input_tokens, output_tokens=output_tokens,
            )
            await conn.execute(update(R).where(R.c.request_id == request_id).values(**values))
            memo = f"{usage_source} usage {input_tokens}+{output_tokens} tokens, prices {r.price_book_version}"
            await store.insert_transfer(conn, f"settle:{request_id}", "post", r.account, USAGE_SINK, paid,
                                        request_id=request_id, memo=memo)
            if billing:
                await store.insert_transfer(conn, f"settle:{request_id}:customer", "post", r.customer_account,
                                            billing.revenue_account, paid_uai, request_id=request_id, memo=memo)
            crash_point("settle:before_commit")
            out = self._settled(r, replayed=False, held=held, values=values)
        crash_point("settle:after_commit")
        return out

    @staticmethod
    async def _post(conn: AsyncConnection, account: str, held: int, charge: int) -> int:
        """Posts ``charge`` against a hold of ``held``; returns what was actually paid."""
        from_hold = min(charge, held)
        await store.post_pending(conn, account, held, from_hold)
        extra = charge - from_hold
        if extra <= 0:
            return from_hold
        take = min(extra, max(await store.available(conn, account, lock=True), 0))
        if take and not await store.debit(conn, account, posted=take):
            raise Conflict("account changed under a locked settlement")  # cannot happen
        return from_hold + take

    @staticmethod
    def _settled(r, replayed: bool, held: int | None = None, values: dict | None = None) -> SettleOutcome:
        v = values or {}
        charged = v.get("charged_ucr", r.charged_ucr)
        h = r.held_ucr if held is None else held
        return SettleOutcome(
            request_id=r.request_id,
            held_ucr=h,
            charged_ucr=charged,
            released_ucr=max(h - charged, 0),
            unpaid_ucr=v.get("unpaid_ucr", r.unpaid_ucr),
            customer_charged_uai=v.get("customer_charged_uai", r.customer_charged_uai),
            customer_unpaid_uai=v.get("customer_unpaid_uai", r.customer_unpaid_uai),
            price_book_version=r.price_book_version,
            replayed=replayed,
        )

    async def _release(self, conn: AsyncConnection, r, kind: str, reason: str) -> None:
        await store.post_pending(conn, r.account, r.held_ucr, 0)
        if r.customer_account:
            await store.post_pending(conn, r.customer_account, r.customer_held_uai, 0)
        await conn.execute(update(R).where(R.c.request_id == r.request_id).values(
            status="voided" if kind == "void" else "expired"))
        await store.insert_transfer(conn, f"{kind}:{r.request_id}", kind, r.account, r.credit_account, r.held_ucr,
                                    request_id=r.request_id, memo=reason)

    async def void(self, request_id: str, reason: str = "") -> tuple[int, bool]:
        """Releases a pending hold. Returns ``(released_ucr, replayed)``."""
        check_id(request_id, "request_id")
        async with self.engine.begin() as conn:
            r = (await conn.execute(select(R).where(R.c.request_id == request_id).with_for_update())).first()
            if r is None:
                raise NotFound(f"reservation {request_id!r} not found")
            if r.status == "voided":
                return r.held_ucr, True
            if r.status != "pending":
                raise Conflict(f"reservation {request_id!r} is {r.status}")
            await self._release(conn, r, "void", reason[:200])
            return r.held_ucr, False

    async def expire(self, now_ms: int = 0, limit: int = 500) -> tuple[int, int]:
        """Voids pending reservations past their expiry. Safe on many replicas at once:
        each row is re-checked under its lock. Returns ``(count, released_ucr)``."""
        now_ms = now_ms or store.now_ms()
        limit = min(max(limit, 1), 5000)
        async with self.engine.connect() as conn:
            due = (await conn.execute(
                select(R.c.request_id).where(R.c.status == "pending", R.c.expires_at_ms <= now_ms).limit(limit)
            )).scalars().all()
        count = released = 0
        for request_id in due:
            async with self.engine.begin() as conn:
                r = (await conn.execute(select(R).where(R.c.request_id == request_id).with_for_update())).first()
                if r is None or r.status != "pending" or r.expires_at_ms > now_ms:
                    continue
                await self._release(conn, r, "expire", "reservation expired")
                count += 1
                released += r.held_ucr
        return count, released

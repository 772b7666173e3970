"""The proxy's lease book against a ledger that keeps the money as the real one does.

``FakeLeaseLedger`` holds one payer's money with the ledger's rules (a lease is a hold;
a grant is at most a fraction of what is available and at least the minimum, else
refused; a release frees down to ``keep``; a settlement posts from the lease's hold, and
what it lacks from what is available, the rest unpaid). It answers after random delays,
so answers arrive out of order. Whatever the interleaving: no request is ever let through
without its bound held, the book's figures equal the ledger's once everything is
answered, and a key that can afford exactly N requests gets exactly N.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cg_proxy import leases
from cg_proxy.leases import Granted, LeaseBook, LeaseRefused, Terms, Ticket

TERMS = Terms(account="key:k1")
FRACTION = 4  # a grant is at most a quarter of what is available


@dataclass
class FakeLeaseLedger:
    available: int
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    held: dict[str, int] = field(default_factory=dict)  # lease id -> held
    open: set[str] = field(default_factory=set)
    spent: int = 0
    unpaid: int = 0
    calls: list[str] = field(default_factory=list)
    seen: dict[str, Granted] = field(default_factory=dict)  # idempotency: id -> answer
    per_request: int = 0  # what the per-request path (Reserve) charged

    async def _pause(self) -> None:
        await asyncio.sleep(self.rng.random() * 0.002)

    def _grant(self, want: int, least: int) -> int:
        grant = min(want, self.available // FRACTION)
        if grant < least:
            if least and self.available >= least:
                grant = least  # the minimum (one request's bound) stays usable to the end
            elif least:
                raise LeaseRefused(f"{self.available} available, {least} needed")
            else:
                grant = 0
        self.available -= grant
        return grant

    async def acquire(self, lease_id, terms, want, least, ttl_s) -> Granted:
        await self._pause()
        self.calls.append("acquire")
        if lease_id in self.seen:
            return self.seen[lease_id]
        grant = self._grant(want[0], least[0])
        self.held[lease_id] = grant
        self.open.add(lease_id)
        self.seen[lease_id] = Granted(grant, 0, 2_000_000_000_000)
        return self.seen[lease_id]

    async def extend(self, extension_id, lease_id, want, least, ttl_s) -> Granted:
        await self._pause()
        self.calls.append("extend")
        if extension_id in self.seen:
            return self.seen[extension_id]
        if lease_id not in self.open:
            raise LeaseRefused("not open")
        grant = self._grant(want[0], least[0])
        self.held[lease_id] += grant
        self.seen[extension_id] = Granted(grant, 0, 2_000_000_000_000)
        return self.seen[extension_id]

    async def release(self, release_id, lease_id, keep) -> Granted:
        await self._pause()
        self.calls.append("release")
        if release_id in self.seen:
            return self.seen[release_id]
        if lease_id not in self.held:
            raise LeaseRefused(f"lease {lease_id!r} not found")
        freed = max(self.held[lease_id] - keep[0], 0)
        self.held[lease_id] -= freed
        self.available += freed
        if keep == (0, 0):
            self.open.discard(lease_id)
        self.seen[release_id] = Granted(freed, 0, 0, "open" if keep != (0, 0) else "closed")
        return self.seen[release_id]

    async def settle(self, ticket: Ticket, charge: int) -> int:
        """SettleLeased for one request: from the lease's hold, then from what is available."""
        await self._pause()
        from_hold = min(charge, self.held[ticket.lease_id])
        self.held[ticket.lease_id] -= from_hold
        extra = min(charge - from_hold, self.available)
        self.available -= extra
        self.unpaid += charge - from_hold - extra
        self.spent += from_hold + extra
        return from_hold + extra

    async def reserve_one(self, bound: int) -> bool:
        """The per-request path: a hold of the bound, or a refusal."""
        await self._pause()
        if self.available < bound:
            return False
        self.available -= bound
        return True


async def _request(book: LeaseBook, ledger: FakeLeaseLedger, bound: int, charge: int) -> bool:
    ticket = await book.reserve("k1", TERMS, bound)
    if ticket is None:
        if not await ledger.reserve_one(bound):
            return False
        ledger.available += bound - charge  # settled on its own: the rest released
        ledger.spent += charge
        return True
    lease = book._leases.get("k1") or book._ending[ticket.lease_id]
    assert lease.taken_ucr <= lease.held_ucr, "a request went through without its bound held"
    await asyncio.sleep(ledger.rng.random() * 0.003)  # upstream
    charged = await ledger.settle(ticket, charge)
    book.settled(ticket, charged, 0)
    return True


def _quiet(book: LeaseBook, ledger: FakeLeaseLedger) -> None:
    """Once everything is answered, the book's figures are the ledger's."""
    for lease in [*book._leases.values(), *book._ending.values()]:
        assert lease.taken_ucr == 0
        assert lease.held_ucr == ledger.held[lease.lease_id], lease.lease_id


async def _run(budget: int, bound: int, charges: list[int], concurrency: int, seed: int) -> tuple:
    ledger = FakeLeaseLedger(available=budget, rng=random.Random(seed))
    book = LeaseBook(ledger, worker_id="w")
    queue = list(charges)
    outcomes: list[bool] = []

    async def client() -> None:
        while queue:
            outcomes.append(await _request(book, ledger, bound, queue.pop()))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    await asyncio.gather(*book._closing, return_exceptions=True)
    for lease in book._leases.values():
        if lease.growing:
            await lease.growing
    _quiet(book, ledger)
    await book.close()
    return ledger, book, outcomes


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 60),
    bound=st.integers(1, 5_000),
    extra=st.integers(0, 4_999),
    concurrency=st.integers(1, 16),
    seed=st.integers(0, 1000),
)
def test_a_key_that_affords_exactly_n_requests_gets_exactly_n(n, bound, extra, concurrency, seed):
    budget = n * bound + min(extra, bound - 1)  # less than one more bound left over
    ledger, _, outcomes = asyncio.run(_run(budget, bound, [bound] * (n + 20), concurrency, seed))
    assert outcomes.count(True) == n
    assert ledger.spent == n * bound
    assert ledger.unpaid == 0
    assert ledger.available + sum(ledger.held.values()) == budget - ledger.spent
    assert sum(ledger.held.values()) == 0  # closed: every lease released


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    charges=st.lists(st.integers(0, 1_000), min_size=1, max_size=120),
    concurrency=st.integers(1, 12),
    seed=st.integers(0, 1000),
)
def test_charges_below_the_bound_add_up_exactly(charges, concurrency, seed):
    budget = 10**9
    ledger, _, outcomes = asyncio.run(_run(budget, 1_000, charges, concurrency, seed))
    assert all(outcomes)
    assert ledger.spent == sum(charges)
    assert ledger.available == budget - sum(charges)


def test_many_requests_take_few_ledger_calls():
    ledger, _, outcomes = asyncio.run(_run(10**12, 1_000, [700] * 500, 8, seed=1))
    assert all(outcomes)
    assert ledger.calls.count("acquire") == 1
    assert len(ledger.calls) < 60, ledger.calls  # 500 requests, a handful of top-ups


def test_a_changed_key_releases_what_is_not_taken_at_once_and_the_rest_after_settling():
    async def go():
        ledger = FakeLeaseLedger(available=10**9)
        book = LeaseBook(ledger, worker_id="w")
        first = await book.reserve("k1", TERMS, 1_000)
        assert first is not None
        held = ledger.held[first.lease_id]
        book.key_changed("k1")  # e.g. revoked
        await asyncio.gather(*book._closing)
        assert ledger.held[first.lease_id] == 1_000  # kept for the request in flight
        assert ledger.available == 10**9 - 1_000
        assert held > 1_000
        second = await book.reserve("k1", TERMS, 1_000)  # a new lease (the key is not gone from keys' view here)
        assert second is not None and second.lease_id != first.lease_id
        book.settled(first, await ledger.settle(first, 400), 0)
        await asyncio.gather(*book._closing)
        assert ledger.held[first.lease_id] == 0 and first.lease_id not in ledger.open
        assert ledger.spent == 400

    asyncio.run(go())


def test_new_billing_terms_take_a_new_lease():
    async def go():
        ledger = FakeLeaseLedger(available=10**9)
        book = LeaseBook(ledger, worker_id="w")
        a = await book.reserve("k1", TERMS, 1_000)
        b = await book.reserve("k1", Terms(account="key:k1", customer_account="customer:c1"), 1_000)
        assert a is not None and b is not None and a.lease_id != b.lease_id
        book.settled(a, await ledger.settle(a, 1_000), 0)
        await asyncio.gather(*book._closing)
        assert a.lease_id not in ledger.open

    asyncio.run(go())


def test_a_refused_key_goes_per_request_and_is_not_asked_again_at_once(monkeypatch):
    async def go():
        ledger = FakeLeaseLedger(available=500)
        now = [100.0]
        book = LeaseBook(ledger, worker_id="w", clock=lambda: now[0])
        assert await book.reserve("k1", TERMS, 1_000) is None
        assert await book.reserve("k1", TERMS, 1_000) is None
        assert ledger.calls == ["acquire"]
        now[0] += leases.REFUSED_BACKOFF_S + 0.1
        ledger.available = 10_000
        assert await book.reserve("k1", TERMS, 1_000) is not None

    asyncio.run(go())


def test_idle_leases_are_released():
    async def go():
        ledger = FakeLeaseLedger(available=10**9)
        now = [100.0]
        book = LeaseBook(ledger, worker_id="w", clock=lambda: now[0])
        t = await book.reserve("k1", TERMS, 1_000)
        assert t is not None
        book.settled(t, await ledger.settle(t, 10), 0)
        now[0] += leases.IDLE_S + 1
        await book.sweep()
        assert book.held() == {}
        assert ledger.available == 10**9 - 10

    asyncio.run(go())


@pytest.mark.parametrize("uai", [0, 500])
def test_a_customer_bound_needs_its_own_hold(uai):
    class CustomerLedger(FakeLeaseLedger):
        async def acquire(self, lease_id, terms, want, least, ttl_s) -> Granted:
            g = await super().acquire(lease_id, terms, want, least, ttl_s)
            return Granted(g.changed_ucr, least[1], g.expires_at_ms)  # only the minimum of AI credits

    async def go():
        ledger = CustomerLedger(available=10**9)
        book = LeaseBook(ledger, worker_id="w")
        t = await book.reserve("k1", TERMS, 1_000, uai)
        assert t is not None and t.uai == uai
        lease = book._leases["k1"]
        assert lease.taken_uai <= lease.held_uai

    asyncio.run(go())


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 40),
    bound=st.integers(1, 3_000),
    extra=st.integers(0, 2_999),
    workers=st.integers(2, 4),
    seed=st.integers(0, 1000),
)
def test_workers_sharing_a_key_serve_exactly_what_it_affords_and_strand_nothing(n, bound, extra, workers, seed):
    """Several workers (a book each) on one payer, requests spread over them: no worker's
    lease keeps the last credits from another's request."""

    async def go():
        ledger = FakeLeaseLedger(available=n * bound + min(extra, bound - 1), rng=random.Random(seed))
        books = [LeaseBook(ledger, worker_id=f"w{i}") for i in range(workers)]
        outcomes = []

        async def client(c: int) -> None:
            for i in range(n + 10):
                outcomes.append(await _request(books[(c + i) % workers], ledger, bound, bound))

        await asyncio.gather(*(client(c) for c in range(workers * 2)))
        for book in books:
            await asyncio.gather(*book._closing, return_exceptions=True)
            await book.close()
        return ledger, outcomes

    ledger, outcomes = asyncio.run(go())
    assert outcomes.count(True) == n
    assert ledger.spent == n * bound and ledger.unpaid == 0
    assert sum(ledger.held.values()) == 0


def test_an_unreachable_ledger_sends_the_request_down_the_per_request_path():
    class Down(FakeLeaseLedger):
        async def acquire(self, lease_id, terms, want, least, ttl_s) -> Granted:
            raise ConnectionError("ledger down")

    async def go():
        book = LeaseBook(Down(available=10**9), worker_id="w")
        assert await book.reserve("k1", TERMS, 1_000) is None  # not an error: Reserve answers (503)

    asyncio.run(go())


def test_a_lease_near_its_expiry_takes_nothing_more():
    async def go():
        ledger = FakeLeaseLedger(available=10**9)
        book = LeaseBook(ledger, worker_id="w")
        first = await book.reserve("k1", TERMS, 1_000)
        assert first is not None
        lease = book._leases["k1"]
        lease.expires_at = time.time() + leases.EXPIRY_MARGIN_S / 2  # its renewals failed
        ledger.open.discard(lease.lease_id)  # and the ledger will not extend it any more
        assert await book.reserve("k1", TERMS, 1_000) is None  # reserved on its own instead

    asyncio.run(go())


def test_an_acquire_made_but_never_answered_is_released_by_its_id():
    """The ledger made the lease, then its answer was lost (it died, or answered after the
    deadline): the book releases that lease id, so the money goes back now rather than at
    the lease's expiry (up to TTL_S later)."""

    class LostAnswer(FakeLeaseLedger):
        async def acquire(self, lease_id, terms, want, least, ttl_s) -> Granted:
            await super().acquire(lease_id, terms, want, least, ttl_s)
            raise TimeoutError("deadline exceeded")

    async def go():
        ledger = LostAnswer(available=10**9)
        book = LeaseBook(ledger, worker_id="w")
        assert await book.reserve("k1", TERMS, 1_000) is None  # reserved on its own instead
        assert sum(ledger.held.values()) > 0  # held by a lease nobody knows of
        for _ in range(200):
            if not ledger.open:
                break
            await asyncio.sleep(0.01)
        await book.close()
        assert sum(ledger.held.values()) == 0 and ledger.available == 10**9 and not ledger.open

    asyncio.run(go())


def test_an_acquire_still_on_its_way_is_released_when_it_lands(monkeypatch):
    """The release came first (the ledger had no such lease yet): asked once more later."""
    monkeypatch.setattr(leases, "ORPHAN_RECHECK_S", 0.05)

    class Late(FakeLeaseLedger):
        async def acquire(self, lease_id, terms, want, least, ttl_s) -> Granted:
            async def lands() -> None:
                await asyncio.sleep(0.02)
                await FakeLeaseLedger.acquire(self, lease_id, terms, want, least, ttl_s)

            self.landing = asyncio.ensure_future(lands())
            raise TimeoutError("deadline exceeded")

    async def go():
        ledger = Late(available=10**9)
        book = LeaseBook(ledger, worker_id="w")
        assert await book.reserve("k1", TERMS, 1_000) is None
        await ledger.landing
        assert sum(ledger.held.values()) > 0
        for _ in range(200):
            if not ledger.open:
                break
            await asyncio.sleep(0.01)
        await book.close()
        assert sum(ledger.held.values()) == 0 and ledger.available == 10**9
        assert ledger.calls.count("release") == 2  # refused (not there yet), then released

    asyncio.run(go())

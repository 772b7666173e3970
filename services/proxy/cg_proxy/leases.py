"""Budget leases, the proxy's side (docs/leases.md): reserve locally, settle in batches.

A worker holds, per key, one lease: a ledger hold on the key's payer (and on the
customer's AI credits when the key bills a customer). A request takes its upper bound
from the lease in memory, with no network call; when the ledger has settled it, the bound
goes back and the real charge leaves what the lease holds. So at any moment

    taken (bounds of requests in flight) <= held (what the ledger holds for this lease)

and the ledger's own guard keeps every lease, with everything else held and spent, within
the payer's money. The worker can never let a key spend what it does not have, however
many workers and replicas hold leases on it.

Sizing: a lease asks for ``HORIZON_S`` seconds of the key's recent spend (an exponentially
weighted rate), at least ``MIN_BOUNDS`` request bounds, at most ``MAX_LEASE_UCR``; the
ledger grants at most a fraction of what is available. It is topped up in the background
when what is free falls under ``LOW_WATER_S`` seconds of spend. When the ledger cannot
grant even one request's bound (the end of a budget), ``reserve`` answers None and the
caller reserves that request on its own (``Reserve``, the per-request path), so the last
credits stay usable from any worker: first the lease gives back what it holds beyond its
requests in flight (less than one bound, useless here, maybe enough with another worker's
rest); the key is not offered a lease again for ``REFUSED_BACKOFF_S``.

Key changes (revoke, suspend, regenerate, new terms) end the key's lease: nothing new is
taken from it, what is not taken is released at once, and the rest when the requests in
flight settle. Idle leases are released after ``IDLE_S``; ``close`` releases them all.

Request slots (a key with RPM/TPM limits: ``Terms.rate``): a request also takes one
request slot, granted by the ledger with the lease (acquire, extend) by the window rule a
``Reserve`` obeys. A slot must be used before its deadline: the book counts it usable
until ``SLOT_MARGIN_S`` before the ledger's deadline, converted to its own clock from the
wall time at which it SENT the call (an answer that arrives late does not stretch it),
so the margin also covers the clocks' skew. Slots are asked for when none is usable
(awaited, like money) or ahead of need (``SLOT_HORIZON_S`` of the key's request rate, in
the background); when the ledger grants none (the window is full) the request is reserved
on its own, and the ledger's refusal answers it (the 429), for ``SLOT_BACKOFF_S`` without
asking again. Unused slots go back with the lease's releases (``return_requests``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cglib.retry import grpc_transient, retrying

log = logging.getLogger(__name__)

HORIZON_S = 10.0  # a lease asks for this many seconds of the key's spend
LOW_WATER_S = 2.0  # topped up when what is free falls below this many seconds of spend
MIN_BOUNDS = 4  # ... and never asks for fewer than this many request bounds
MAX_LEASE_UCR = 50 * 1_000_000  # 50 credits ($0.50) at most on one lease
RATE_HALF_LIFE_S = 5.0
TTL_S = 120  # the ledger frees a lease nobody renews after this long
RENEW_BEFORE_S = 60.0  # extended (even by nothing) when its expiry is nearer than this
EXPIRY_MARGIN_S = 10.0  # ... and used no more when it is nearer than this (requests in flight settle first)
IDLE_S = 30.0
REFUSED_BACKOFF_S = 1.0
# An orphaned lease (its acquire unanswered) the ledger does not know is asked for once more
# after this long: the acquire may have been on its way still.
ORPHAN_RECHECK_S = 5.0
SLOT_MARGIN_S = 1.0  # a slot is used no later than this before the ledger's deadline (3 s after the grant)
SLOT_HORIZON_S = 1.5  # slots are asked for this many seconds of the key's request rate ...
MAX_SLOTS = 200  # ... at most this many at once (the ledger grants at most 1/8 of what is left)
SLOT_BACKOFF_S = 0.25  # after a grant of none, requests go to the per-request path this long


class LeaseRefused(Exception):
    """The ledger cannot hold even the minimum asked for (or the lease is not open)."""


@dataclass(frozen=True)
class RateSpec:
    """A key's limits (the ledger's ``RateLimit``): its leases carry request slots."""

    key: str
    rpm: int
    tpm: int


@dataclass(frozen=True)
class Terms:
    """Who pays a key's requests: what a lease is taken on. A change of terms (the key's
    billing changed) means a new lease."""

    account: str  # the payer of provider cost
    customer_account: str = ""  # "" when the key bills no customer
    revenue_account: str = ""
    profit_multiplier: str = ""
    price_per_ai_credit_cents: str = ""
    floor_usd_per_mtok: str = ""
    rate: RateSpec | None = None  # a rate-limited key: its requests need slots too


@dataclass(frozen=True)
class Granted:
    """The ledger's answer about a lease: what the call added (acquire, extend) or freed
    (release), and until when the lease runs. The book applies the change, never the
    ledger's total: a settlement answered while the call was in flight may or may not be
    in that total, so only changes add up exactly."""

    changed_ucr: int
    changed_uai: int
    expires_at_ms: int
    status: str = "open"
    slots: int = 0  # request slots granted (acquire, extend) or taken back (release)
    slots_deadline_ms: int = 0  # the ledger's wall clock
    rate_state: Any = None  # the ledger's RateLimitState as of the grant (x-ratelimit-*)


class LeaseLedger(Protocol):
    """``slots`` (want, least) is passed only for a rate-limited key's lease, and
    ``return_requests`` only when there are slots to give back."""

    async def acquire(
        self,
        lease_id: str,
        terms: Terms,
        want: tuple[int, int],
        least: tuple[int, int],
        ttl_s: int,
        slots: tuple[int, int] | None = None,
    ) -> Granted:
        """Raises ``LeaseRefused`` when even ``least`` (µcr, µai) cannot be held."""
        ...

    async def extend(
        self,
        extension_id: str,
        lease_id: str,
        want: tuple[int, int],
        least: tuple[int, int],
        ttl_s: int,
        slots: tuple[int, int] | None = None,
        terms: Terms | None = None,
    ) -> Granted: ...

    async def release(
        self, release_id: str, lease_id: str, keep: tuple[int, int], return_requests: int = 0
    ) -> Granted: ...


@dataclass(frozen=True)
class Ticket:
    """A request's share of a lease: its bound, given back when it settles."""

    key_id: str
    lease_id: str
    ucr: int
    uai: int
    # a rate-limited key: the ledger's window state at the grant the slot came from, the
    # slots of that grant still unused here, and how long ago it was granted (seconds)
    rate_state: Any = None
    slots_left: int = 0
    state_age_s: float = 0.0


@dataclass
class _Slots:
    """One grant of request slots: ``left`` usable until ``until`` (the book's clock)."""

    left: int
    until: float
    state: Any
    at: float


@dataclass
class _Rate:
    """An exponentially weighted rate (per second) of what a key spends."""

    per_s: float = 0.0
    at: float = 0.0

    def add(self, amount: int, now: float) -> None:
        if self.at:
            self.per_s *= 0.5 ** ((now - self.at) / RATE_HALF_LIFE_S)
        self.per_s += amount * (0.693 / RATE_HALF_LIFE_S)
        self.at = now


@dataclass
class Lease:
    key_id: str
    lease_id: str
    terms: Terms
    held_ucr: int = 0
    held_uai: int = 0
    taken_ucr: int = 0
    taken_uai: int = 0
    expires_at: float = 0.0  # time.time()
    last_used: float = 0.0  # the book's clock
    closing: bool = False
    growing: asyncio.Task[None] | None = None
    seq: itertools.count = field(default_factory=itertools.count)
    slots: list[_Slots] = field(default_factory=list)  # oldest grant first
    slots_refused_until: float = 0.0
    slot_waiters: int = 0  # requests waiting for slots (a burst: the next grant asks for them all)

    def usable_slots(self, now: float) -> int:
        self.slots = [g for g in self.slots if g.left > 0 and g.until > now]
        return sum(g.left for g in self.slots)

    def take_slot(self, now: float) -> _Slots | None:
        """One slot of the oldest grant still usable (the soonest to lapse), or None."""
        if not self.usable_slots(now):
            return None
        grant = self.slots[0]
        grant.left -= 1
        return grant

    @property
    def free(self) -> tuple[int, int]:
        return self.held_ucr - self.taken_ucr, self.held_uai - self.taken_uai

    def fits(self, ucr: int, uai: int) -> bool:
        free_ucr, free_uai = self.free
        # a lease about to expire (its renewal failed: the ledger unreachable) takes nothing
        # more: past its expiry the ledger frees it, and a request taken from it would be
        # paid only from what is left
        live = time.time() < self.expires_at - EXPIRY_MARGIN_S
        return not self.closing and live and free_ucr >= ucr and free_uai >= uai


class LeaseBook:
    """One worker's leases, one per key."""

    def __init__(
        self,
        ledger: LeaseLedger,
        worker_id: str = "",
        clock: Callable[[], float] = time.monotonic,
        idle_s: float = IDLE_S,
    ) -> None:
        self.ledger = ledger
        self.idle_s = idle_s
        self.worker_id = worker_id or uuid.uuid4().hex[:12]
        self.clock = clock
        self._leases: dict[str, Lease] = {}
        self._rates: dict[str, tuple[_Rate, _Rate]] = {}
        self._requests: dict[str, _Rate] = {}  # a rate-limited key's requests per second
        self._refused_until: dict[str, float] = {}
        self._acquiring: dict[str, asyncio.Task[Lease | None]] = {}
        self._ids = itertools.count(1)
        self._closing: set[asyncio.Task[None]] = set()
        self._ending: dict[str, Lease] = {}  # lease id -> an ended lease with requests in flight
        self._stopping = asyncio.Event()  # set by close: a release is tried once more, not retried

    # -- the request path --------------------------------------------------------------

    async def reserve(self, key_id: str, terms: Terms, ucr: int, uai: int = 0) -> Ticket | None:
        """The request's bound taken from the key's lease, or None: reserve it on its own."""
        now = self.clock()
        for _ in range(3):  # a lease that a concurrent request just emptied: try again, briefly
            lease = self._leases.get(key_id)
            if lease is not None and lease.terms != terms:
                self._end(lease)  # the key's billing changed: a new lease on the new terms
                lease = None
            if lease is not None and lease.fits(ucr, uai):
                if terms.rate is None or lease.usable_slots(now):
                    return self._take(lease, ucr, uai, now)
                if lease.slots_refused_until > now:  # the window is full: the per-request path answers
                    return None
                if lease.growing is None:
                    self._grow(lease, 0, 0, slots=True)
                assert lease.growing is not None
                lease.slot_waiters += 1  # the next grant asks for as many as wait
                try:
                    await asyncio.shield(lease.growing)
                finally:
                    lease.slot_waiters -= 1
                now = self.clock()
                continue
            if self._refused_until.get(key_id, 0.0) > now:
                await self._give_back(lease)
                return None
            if lease is not None and lease.growing is not None:
                await asyncio.shield(lease.growing)
                continue
            if lease is not None:
                free_ucr, free_uai = lease.free
                self._grow(lease, max(ucr - free_ucr, 0), max(uai - free_uai, 0), slots=terms.rate is not None)
                assert lease.growing is not None
                await asyncio.shield(lease.growing)
                if self._refused_until.get(key_id, 0.0) > now:
                    await self._give_back(lease)
                    return None
                continue
            lease = await self._acquire(key_id, terms, ucr, uai)
            if lease is None:
                return None
            now = self.clock()
        return None

    def settled(self, ticket: Ticket, charged_ucr: int, charged_uai: int) -> None:
        """The ledger posted the request at ``charged``: its bound is free again and the
        charge has left the lease's hold."""
        lease = self._by_id(ticket)
        if lease is None:
            return
        lease.taken_ucr -= ticket.ucr
        lease.taken_uai -= ticket.uai
        lease.held_ucr -= min(charged_ucr, lease.held_ucr)
        lease.held_uai -= min(charged_uai, lease.held_uai)
        if lease.closing and not lease.taken_ucr and not lease.taken_uai:
            self._release_later(lease, keep=(0, 0))

    def returned(self, ticket: Ticket) -> None:
        """The request cost nothing (refused before going upstream): its bound is free."""
        self.settled(ticket, 0, 0)

    # -- events ------------------------------------------------------------------------

    def key_changed(self, key_id: str, prefix: bool = False) -> None:
        """A key event (revoke, suspend, regenerate, new models, limits or billing): its
        lease (with ``prefix``, every lease whose book key starts with ``key_id``) takes
        nothing more; what is not taken goes back now, the rest as its requests settle."""
        for key, lease in list(self._leases.items()):
            if key == key_id or (prefix and key.startswith(key_id)):
                self._end(lease)

    async def sweep(self) -> None:
        """Releases idle leases and renews the ones about to expire (run every few seconds)."""
        now = self.clock()
        for lease in list(self._leases.values()):
            if lease.closing:
                continue
            if now - lease.last_used > self.idle_s and not lease.taken_ucr and not lease.taken_uai:
                self._end(lease)
            elif lease.expires_at - time.time() < RENEW_BEFORE_S and lease.growing is None:
                self._grow(lease, 0, 0)
        if self._closing:  # a release the ledger has not answered yet does not hold up renewals
            await asyncio.wait(self._closing, timeout=1.0)

    async def close(self) -> None:
        """On shutdown, after the requests in flight settled: every lease released (one
        attempt each; what the ledger does not get back now, it frees at the lease's expiry)."""
        self._stopping.set()
        for lease in list(self._leases.values()):
            self._end(lease)
        await asyncio.gather(*self._closing, return_exceptions=True)

    def held(self) -> dict[str, tuple[int, int]]:
        """What each open lease holds (µcr, µai), by key: for metrics and tests."""
        return {k: (v.held_ucr, v.held_uai) for k, v in self._leases.items()}

    # -- inside --------------------------------------------------------------------------

    def _take(self, lease: Lease, ucr: int, uai: int, now: float) -> Ticket:
        slot = lease.take_slot(now) if lease.terms.rate is not None else None
        lease.taken_ucr += ucr
        lease.taken_uai += uai
        lease.last_used = now
        rate_ucr, rate_uai = self._rates.setdefault(lease.key_id, (_Rate(), _Rate()))
        rate_ucr.add(ucr, now)
        rate_uai.add(uai, now)
        free_ucr, free_uai = lease.free
        low_ucr = max(rate_ucr.per_s * LOW_WATER_S, ucr)
        low_uai = max(rate_uai.per_s * LOW_WATER_S, uai)
        slots_low = False
        if slot is not None:
            requests = self._requests.setdefault(lease.key_id, _Rate())
            requests.add(1, now)
            slots_low = lease.slots_refused_until <= now and lease.usable_slots(now) < max(
                requests.per_s * SLOT_HORIZON_S / 2, 1
            )
        if lease.growing is None and (free_ucr < low_ucr or (uai and free_uai < low_uai) or slots_low):
            self._grow(lease, 0, 0, ahead=(ucr, uai), slots=lease.terms.rate is not None)
        if slot is None:
            return Ticket(lease.key_id, lease.lease_id, ucr, uai)
        return Ticket(lease.key_id, lease.lease_id, ucr, uai, slot.state, slot.left, now - slot.at)

    def _want_slots(self, key_id: str) -> tuple[int, int]:
        requests = self._requests.get(key_id, _Rate())
        # a key's slack stays in the window: a slot lapsed unused counts there until its
        # deadline is a minute old, so a key with little traffic asks for one at a time
        return min(max(math.ceil(requests.per_s * SLOT_HORIZON_S), 1), MAX_SLOTS), 1

    def _want(self, key_id: str, ucr: int, uai: int) -> tuple[int, int]:
        rate_ucr, rate_uai = self._rates.get(key_id, (_Rate(), _Rate()))
        want_ucr = min(max(int(rate_ucr.per_s * HORIZON_S), ucr * MIN_BOUNDS), MAX_LEASE_UCR)
        want_uai = max(int(rate_uai.per_s * HORIZON_S), uai * MIN_BOUNDS) if uai else 0
        return max(want_ucr, ucr), max(want_uai, uai)

    async def _acquire(self, key_id: str, terms: Terms, ucr: int, uai: int) -> Lease | None:
        task = self._acquiring.get(key_id)
        if task is None:
            task = asyncio.ensure_future(self._acquire_now(key_id, terms, ucr, uai))
            self._acquiring[key_id] = task
            task.add_done_callback(lambda _: self._acquiring.pop(key_id, None))
        return await asyncio.shield(task)

    async def _acquire_now(self, key_id: str, terms: Terms, ucr: int, uai: int) -> Lease | None:
        lease_id = f"lease:{self.worker_id}:{next(self._ids)}"
        sent = (self.clock(), time.time())
        slots: dict[str, Any] = {"slots": self._want_slots(key_id)} if terms.rate is not None else {}
        try:
            granted = await self.ledger.acquire(
                lease_id, terms, self._want(key_id, ucr, uai), (ucr, uai), TTL_S, **slots
            )
        except LeaseRefused:
            self._refused_until[key_id] = self.clock() + REFUSED_BACKOFF_S
            return None
        except Exception as e:  # the ledger unreachable: the request is reserved on its own (503 if down)
            log.warning("lease not acquired", extra={"lease_id": lease_id, "error": repr(e)})
            self._refused_until[key_id] = self.clock() + REFUSED_BACKOFF_S
            self._release_orphan(lease_id)
            return None
        lease = Lease(key_id, lease_id, terms, last_used=self.clock())
        self._apply(lease, granted, sent)
        if key_id in self._leases:  # cannot happen (one acquire per key at a time): keep the money exact anyway
            self._end(self._leases[key_id])
        self._leases[key_id] = lease
        return lease

    def _grow(self, lease: Lease, ucr: int, uai: int, ahead: tuple[int, int] = (0, 0), slots: bool = False) -> None:
        """Extends the lease by at least (``ucr``, ``uai``) — 0 when it is topped up ahead
        of need, sized from ``ahead`` (a request's bound) and the key's rate — or, with all
        zero, only renews its expiry; with ``slots`` it asks for request slots too."""
        lease.growing = asyncio.ensure_future(self._grow_now(lease, (ucr, uai), ahead, slots))

    async def _grow_now(self, lease: Lease, least: tuple[int, int], ahead: tuple[int, int], slots: bool) -> None:
        extension_id = f"{lease.lease_id}:x{next(lease.seq)}"
        size = (max(least[0], ahead[0]), max(least[1], ahead[1]))
        want = self._want(lease.key_id, *size) if any(size) else (0, 0)
        sent = (self.clock(), time.time())
        wanted: dict[str, Any] = {}
        if slots and lease.terms.rate is not None:
            want_slots, least_slots = self._want_slots(lease.key_id)
            want_slots = min(max(want_slots, lease.slot_waiters + 1), MAX_SLOTS)
            wanted = {"slots": (want_slots, least_slots), "terms": lease.terms}
        try:
            granted = await self.ledger.extend(extension_id, lease.lease_id, want, least, TTL_S, **wanted)
        except LeaseRefused:
            self._refused_until[lease.key_id] = self.clock() + REFUSED_BACKOFF_S
        except Exception as e:  # the ledger unreachable: the lease keeps what it has
            log.warning("lease not extended", extra={"lease_id": lease.lease_id, "error": repr(e)})
        else:
            self._apply(lease, granted, sent)
            if wanted and not granted.slots:  # the window is full: Reserve answers for a while
                lease.slots_refused_until = self.clock() + SLOT_BACKOFF_S
        finally:
            lease.growing = None

    def _apply(self, lease: Lease, granted: Granted, sent: tuple[float, float]) -> None:
        """``sent``: (the book's clock, the wall clock) when the call went out."""
        lease.held_ucr += granted.changed_ucr
        lease.held_uai += granted.changed_uai
        lease.expires_at = granted.expires_at_ms / 1000
        if granted.slots:
            sent_at, sent_wall = sent
            until = sent_at + (granted.slots_deadline_ms / 1000 - sent_wall) - SLOT_MARGIN_S
            lease.slots.append(_Slots(granted.slots, until, granted.rate_state, sent_at))
        if granted.status != "open":
            self._end(lease)

    def _by_id(self, ticket: Ticket) -> Lease | None:
        lease = self._leases.get(ticket.key_id)
        if lease is not None and lease.lease_id == ticket.lease_id:
            return lease
        return self._ending.get(ticket.lease_id)

    def _end(self, lease: Lease) -> None:
        if self._leases.get(lease.key_id) is lease:
            del self._leases[lease.key_id]
        if lease.closing:
            return
        lease.closing = True
        self._ending[lease.lease_id] = lease
        self._release_later(lease, keep=(lease.taken_ucr, lease.taken_uai))

    async def _give_back(self, lease: Lease | None) -> None:
        """The ledger cannot grow the lease: what it holds beyond the requests in flight goes
        back to the payer before the request is reserved on its own, so money a worker
        holds but cannot use (less than one request's bound) is never stranded in its lease
        while another worker's request needs it."""
        if lease is None or lease.closing or lease.free == (0, 0):
            return
        await self._release_now(lease, keep=(lease.taken_ucr, lease.taken_uai))

    def _release_orphan(self, lease_id: str) -> None:
        """An acquire whose answer never came may have been made all the same (the ledger
        committed it, then died or answered too late): it is released by its id, so what it
        holds goes back to the payer now rather than at its expiry. A lease the ledger never
        made is NOT_FOUND; asked once more after ``ORPHAN_RECHECK_S`` in case the acquire was
        still on its way."""
        task = asyncio.ensure_future(self._release_orphan_now(lease_id))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _release_orphan_now(self, lease_id: str) -> None:
        release_id = f"{lease_id}:orphaned"  # one id: a retry (or a replay) never releases twice

        def release() -> Awaitable[Granted]:
            return self.ledger.release(release_id, lease_id, (0, 0))

        for attempt in range(2):
            try:
                granted = await self._until_released(release, "orphaned lease release", lease_id)
            except Exception as e:
                unknown = isinstance(e, LeaseRefused)  # the ledger has no such lease (or it is closed)
                if unknown and attempt == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), ORPHAN_RECHECK_S)
                    if not self._stopping.is_set():
                        continue
                if not unknown:
                    log.warning(
                        "orphaned lease not released; it will expire", extra={"lease_id": lease_id, "error": repr(e)}
                    )
                return
            if granted.changed_ucr or granted.changed_uai:
                log.info(
                    "orphaned lease released",
                    extra={"lease_id": lease_id, "ucr": granted.changed_ucr, "uai": granted.changed_uai},
                )
            return

    async def _until_released(self, release: Callable[[], Awaitable[Granted]], what: str, lease_id: str) -> Granted:
        """``release`` (one release id) retried through a ledger outage, until the lease would
        have expired anyway or the book closes."""
        return await retrying(
            release,
            what=what,
            retry_on=grpc_transient,
            give_up_after_s=TTL_S,
            stop=self._stopping,
            first_delay_s=0.25,
            max_delay_s=5.0,
            extra={"lease_id": lease_id},
        )

    def _release_later(self, lease: Lease, keep: tuple[int, int]) -> None:
        task = asyncio.ensure_future(self._release_now(lease, keep, patient=True))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _release_now(self, lease: Lease, keep: tuple[int, int], patient: bool = False) -> None:
        """Gives the ledger back what the lease holds beyond ``keep``. ``patient``: through a
        ledger outage too (the same release id, so a retry never releases twice), until the
        lease would have expired anyway or the book closes; the payer gets the money back
        when the ledger returns rather than at the expiry."""
        release_id = f"{lease.lease_id}:r{next(lease.seq)}"
        # unused slots go back with it (never used from now on: the lease is ending or
        # cannot grow, and a request that finds none asks for new ones)
        unused = lease.usable_slots(self.clock())
        lease.slots = []
        returning: dict[str, Any] = {"return_requests": unused} if unused else {}

        def release() -> Awaitable[Granted]:
            return self.ledger.release(release_id, lease.lease_id, keep, **returning)

        try:
            try:
                granted = await release()
            except Exception as e:
                if not patient or not grpc_transient(e):
                    raise
                granted = await self._until_released(release, "lease release", lease.lease_id)
        except Exception as e:  # the lease expires on the ledger's side: nothing is lost
            log.warning("lease not released; it will expire", extra={"lease_id": lease.lease_id, "error": repr(e)})
            return
        lease.held_ucr -= granted.changed_ucr
        lease.held_uai -= granted.changed_uai
        if keep == (0, 0):
            self._ending.pop(lease.lease_id, None)

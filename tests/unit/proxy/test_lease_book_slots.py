"""The lease book's request slots (a rate-limited key) against a ledger that counts the
key's window by the ledger's own rule (``cg_ledger.ratelimits``), on a clock the test
moves: workers sharing a key, some requests taken from slots and the rest reserved one
by one, never make more than ``rpm`` requests in any 60 s; a slot is never used after
its deadline less the margin, even when the grant's answer came late; the limit is
reached, not idled under; unused slots go back with a release; the x-ratelimit state a
leased request carries is the grant's, its own grant's unused slots given back.
"""

from __future__ import annotations

import asyncio
import bisect
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cg_ledger.ratelimits import SLOT_TTL_MS, WINDOW_MS, RateLimit, evaluate, slots
from cg_proxy import leases
from cg_proxy.leases import SLOT_MARGIN_S, Granted, LeaseBook, RateSpec, Terms

RPM = 12
TERMS = Terms(account="key:k1", rate=RateSpec("k1", RPM, 0))
LIMIT = RateLimit("k1", RPM, 0)
BUSY = Terms(account="key:k1", rate=RateSpec("k1", 80, 0))  # room for grants of several
FAR = 2_000_000_000_000


@dataclass
class Clock:
    s: float = 1_000_000.0

    def __call__(self) -> float:
        return self.s

    @property
    def ms(self) -> int:
        return int(self.s * 1000)


@dataclass
class SlotLedger:
    """Money without end; slots and reservations by the window rule, at the clock's time
    (``delay_s``: how long an answer takes, the clock moving meanwhile)."""

    clock: Clock
    delay_s: float = 0.0
    limit: RateLimit = LIMIT
    window: list[list[int]] = field(default_factory=list)  # [end_ms, requests, grant's lease]
    leases_of: dict[int, str] = field(default_factory=dict)
    deadlines: dict[str, list[int]] = field(default_factory=dict)  # lease id -> its grants' deadlines
    returned: int = 0
    calls: list[str] = field(default_factory=list)

    def _entries(self, now: int) -> list[tuple[int, int, int]]:
        return sorted((end, n, 0) for end, n, _ in self.window if end > now - WINDOW_MS)

    def _grant(self, lease_id: str, want: tuple[int, int] | None) -> Granted:
        now = self.clock.ms
        k, state = slots(self.limit, self._entries(now), now, *want) if want else (0, None)
        if k:
            self.window.append([now + SLOT_TTL_MS, k, hash(lease_id)])
            self.leases_of[hash(lease_id)] = lease_id
            self.deadlines.setdefault(lease_id, []).append(now + SLOT_TTL_MS)
        return Granted(10**9, 0, FAR, "open", k, now + SLOT_TTL_MS if k else 0, state)

    async def acquire(self, lease_id, terms, want, least, ttl_s, slots=None) -> Granted:
        assert terms.rate.rpm == self.limit.rpm and slots is not None and slots[1] >= 1
        self.calls.append("acquire")
        granted = self._grant(lease_id, slots)  # decided when it arrives ...
        self.clock.s += self.delay_s  # ... answered later
        return granted

    async def extend(self, extension_id, lease_id, want, least, ttl_s, slots=None, terms=None) -> Granted:
        self.calls.append("extend")
        granted = self._grant(lease_id, slots)
        self.clock.s += self.delay_s
        return Granted(want[0], 0, FAR, "open", granted.slots, granted.slots_deadline_ms, granted.rate_state)

    async def release(self, release_id, lease_id, keep, return_requests=0) -> Granted:
        self.calls.append("release")
        now, back = self.clock.ms, 0
        for entry in sorted(self.window, key=lambda e: -e[0]):  # the newest grants first, as the ledger
            if self.leases_of.get(entry[2]) == lease_id and entry[0] > now:
                n = min(entry[1], return_requests - back)
                entry[1] -= n
                back += n
        self.returned += back
        return Granted(0, 0, FAR, "open" if keep != (0, 0) else "closed", back)

    def reserve(self) -> bool:
        """The per-request path: a Reserve with the rate limit."""
        self.calls.append("reserve")
        now = self.clock.ms
        if evaluate(self.limit, self._entries(now), now).limited:
            return False
        self.window.append([now, 1, 0])
        return True


@pytest.fixture
def wall_clock(monkeypatch):
    """The book reads the wall clock (at sending, for a slot's deadline) from the test's."""
    clock = Clock()
    monkeypatch.setattr(leases.time, "time", clock)
    return clock


def busiest_window(times: list[float]) -> int:
    times = sorted(times)
    return max((i + 1 - bisect.bisect_right(times, u - WINDOW_MS / 1000) for i, u in enumerate(times)), default=0)


def overstated(shown: list[tuple[float, int]], rpm: int) -> list[tuple[float, int]]:
    """The successes, as (time, x-ratelimit-remaining-requests), of a 60 s window of
    request times in which more than ``rpm - v`` successes said ``v`` or more requests were
    left ([] when there is none). Values may repeat (slots given back, or lapsed, come back
    to the window), but a header never promises more than is left: this is ``rpm`` itself
    at ``v = 0``, and with 60 successes in a window it leaves only 59, 58, ... 0."""
    shown = sorted(shown)
    for i, (u, _) in enumerate(shown):
        values = sorted((v for t, v in shown[: i + 1] if t > u - WINDOW_MS / 1000), reverse=True)
        if any(v > rpm - rank for rank, v in enumerate(values, 1)):
            return [(t, v) for t, v in shown[: i + 1] if t > u - WINDOW_MS / 1000]
    return []


async def _request(
    book: LeaseBook,
    ledger: SlotLedger,
    used: list[float],
    by_slot: list[float],
    shown: list | None = None,
    terms: Terms = TERMS,
) -> bool:
    ticket = await book.reserve("k1", terms, 100)
    now = ledger.clock.s
    if ticket is None:
        remaining = evaluate(ledger.limit, ledger._entries(ledger.clock.ms), ledger.clock.ms).remaining_requests
        if not ledger.reserve():
            return False
    else:
        lease_deadlines = ledger.deadlines[ticket.lease_id]
        assert any(now <= d / 1000 - SLOT_MARGIN_S + 1e-9 for d in lease_deadlines), "a slot used past its deadline"
        book.settled(ticket, 0, 0)
        by_slot.append(now)
        # what ledger_client._leased_rate_state puts in the header
        remaining = min(ticket.rate_state.remaining_requests + ticket.slots_left, ledger.limit.rpm)
    used.append(now)
    if shown is not None:
        shown.append((now, remaining))
    return True


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from([0.0, 0.05, 0.3, 0.9, 2.5])), min_size=20, max_size=120
    ),
    delay_s=st.sampled_from([0.0, 0.2, 1.5]),
    rpm=st.sampled_from([RPM, 80]),  # 80: room for grants of several slots
)
def test_workers_sharing_a_key_never_pass_rpm_in_any_window(steps, delay_s, rpm):
    wall_clock = Clock()
    terms = Terms(account="key:k1", rate=RateSpec("k1", rpm, 0))

    async def go() -> tuple[list[float], list[float], list[tuple[float, int]], SlotLedger]:
        ledger = SlotLedger(wall_clock, delay_s, limit=RateLimit("k1", rpm, 0))
        books = [LeaseBook(ledger, worker_id=f"w{i}", clock=wall_clock, idle_s=10**6) for i in range(3)]
        used: list[float] = []
        by_slot: list[float] = []
        shown: list[tuple[float, int]] = []
        for i, (worker, advance) in enumerate(steps):
            await _request(books[worker], ledger, used, by_slot, shown, terms)
            await asyncio.sleep(0)  # top-ups in the background get their turn
            wall_clock.s += advance
            lease = books[worker]._leases.get("k1")
            if i % 17 == 16 and lease is not None:  # now and then a worker gives its unused slots back
                books[worker]._end(lease)
                await asyncio.gather(*books[worker]._closing)
        for book in books:
            await book.close()
        return used, by_slot, shown, ledger

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(leases.time, "time", wall_clock)
        used, by_slot, shown, ledger = asyncio.run(go())
    assert busiest_window(used) <= rpm
    assert overstated(shown, rpm) == []  # x-ratelimit-remaining-requests never promises too much
    # (a burst is served to the limit from one worker: below; over several, an unused slot
    # of one worker counts until it lapses, as it must, so another may be refused meanwhile)
    assert len(by_slot) >= len(used) - ledger.calls.count("reserve")


def test_a_burst_is_served_from_slots_up_to_the_limit_then_refused(wall_clock):
    async def go() -> tuple[list[bool], SlotLedger, LeaseBook]:
        ledger = SlotLedger(wall_clock)
        book = LeaseBook(ledger, worker_id="w", clock=wall_clock)
        used: list[float] = []
        got = [await _request(book, ledger, used, []) for _ in range(RPM + 5)]
        return got, ledger, book

    got, ledger, book = asyncio.run(go())
    assert got == [True] * RPM + [False] * 5
    assert ledger.calls.count("reserve") <= 5 + 2  # the refusals (and at most a couple more)


def test_a_leased_request_carries_the_grants_window_state(wall_clock):
    terms = Terms(account="key:k1", rate=RateSpec("k1", 80, 0))

    async def go():
        ledger = SlotLedger(wall_clock, limit=RateLimit("k1", 80, 0))
        book = LeaseBook(ledger, worker_id="w", clock=wall_clock)
        first = await book.reserve("k1", terms, 100)  # a quiet key: one slot at a time
        tickets = [await book.reserve("k1", terms, 100) for _ in range(12)]  # busier: bigger grants
        wall_clock.s += 0.5
        later = await book.reserve("k1", terms, 100)
        return first, tickets, later, ledger

    first, tickets, later, ledger = asyncio.run(go())
    assert first is not None and first.rate_state.remaining_requests == 80 - 1 and first.slots_left == 0
    shown = [t.rate_state.remaining_requests + t.slots_left for t in [first, *tickets]]
    assert shown == list(range(79, 79 - 13, -1))  # each request its own place in the window
    assert max(t.slots_left for t in tickets) >= 1  # some came from a grant of several
    assert later is not None


def test_unused_slots_go_back_with_the_release_and_expired_ones_are_never_used(wall_clock):
    async def go() -> tuple[SlotLedger, list[str], int]:
        ledger = SlotLedger(wall_clock, limit=RateLimit("k1", 80, 0))
        book = LeaseBook(ledger, worker_id="w", clock=wall_clock)
        for _ in range(12):  # a busier key: grants of more than one
            assert await book.reserve("k1", BUSY, 100) is not None
        lease = book._leases["k1"]
        assert lease.usable_slots(wall_clock.s) >= 1, ledger.window
        wall_clock.s += SLOT_TTL_MS / 1000 - SLOT_MARGIN_S  # the margin reached: not usable any more
        assert lease.usable_slots(wall_clock.s) == 0
        calls_before = len(ledger.calls)
        assert await book.reserve("k1", BUSY, 100) is not None
        asked = ledger.calls[calls_before:]
        unused = lease.usable_slots(wall_clock.s)
        await book.close()
        return ledger, asked, unused

    ledger, asked, unused = asyncio.run(go())
    assert asked == ["extend"]  # a fresh grant, not the stale slot
    assert ledger.returned == unused  # the fresh grant's unused slots went back on close


def test_a_grant_whose_answer_came_late_is_used_only_until_its_deadline(wall_clock):
    async def go() -> tuple[SlotLedger, list[float]]:
        ledger = SlotLedger(wall_clock, delay_s=SLOT_TTL_MS / 1000 - SLOT_MARGIN_S)  # late: nothing usable
        book = LeaseBook(ledger, worker_id="w", clock=wall_clock)
        used: list[float] = []
        await _request(book, ledger, used, by_slot := [])
        return ledger, by_slot

    ledger, by_slot = asyncio.run(go())
    assert by_slot == []  # every grant arrived past its margin: the request went to Reserve
    assert ledger.calls[-1] == "reserve"

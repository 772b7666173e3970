"""Budget leases in the ledger's stateful model (``test_ledger_stateful.LedgerMachine``).

``LeaseRules`` is mixed into the machine: it adds rules that acquire, extend and release
leases (``cg_ledger.leases``) on key budgets and on a partner's balance, and settle
requests from them in batches (``SettleLeased``: new request ids, retries of settled
ones, in-batch duplicates, ids that belong to another lease or to a plain reservation,
unknown leases, settlements after a release or an expiry), all beside the machine's
reservations, revokes, expiries and int64 edges. The model (``lease_book``, ``leased``)
says what each call must answer and move; the invariant checks the ledger's lease rows,
its settled rows and its journal against it:

- a lease's grants = what its requests used + what releases and its expiry freed + what
  it still holds (so a release returns exactly the unused part, once);
- no guarded account's available balance below 0: spend + every open hold (leases
  included) never above what was put in;
- a refused call (or an all-refused batch) writes nothing but a stored refusal.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule
from sqlalchemy import text

from cg_ledger.accounts import usage_shard
from cg_ledger.charges import MAX_TOKENS
from cg_ledger.errors import AccountClosed, Conflict, InsufficientFunds, InvalidArgument, NotFound, OutOfRange
from cg_ledger.leases import LEASE_FRACTION, LeasedSettlement, Leases
from cg_ledger.limits import MAX_AMOUNT
from cg_ledger.reservations import SettleOutcome

TTL_S = 60
NO_LEASE = "lease-nope"
STATUS = {"open": "pending", "closed": "closed", "expired": "expired"}  # the model's words -> the row's
# mostly sizes a budget can give, some at the bounds of one amount and beyond
WANTS = st.one_of(st.integers(0, 200_000), st.integers(0, 200_000), st.sampled_from([-1, MAX_AMOUNT, MAX_AMOUNT + 1]))
LEASTS = st.one_of(st.integers(0, 40_000), st.integers(0, 40_000), st.sampled_from([-1, 10**6, MAX_AMOUNT + 1]))
# what a request settled from a lease used: mostly less than a lease holds, some more
USAGE = st.one_of(
    st.tuples(st.just("haiku"), st.integers(0, 10), st.integers(0, 20)),
    st.tuples(st.just("haiku"), st.integers(0, 10), st.integers(0, 20)),
    st.tuples(st.just("haiku"), st.integers(0, 40), st.integers(0, 120)),
)


class LeaseRules:
    """Rules and an invariant for budget leases; needs the machine's model and helpers."""

    lease_book: dict[str, dict]  # lease id -> account, held, status, granted, used, freed
    leased: dict[str, dict]  # request id settled from a lease -> its outcome and settlement

    def _lease_model(self) -> None:
        self.leases = Leases(self.res)
        self.lease_book = {}
        self.leased = {}

    def _grant(self, account: str, want: int, least: int):
        """What the ledger grants (``leases.grant``), or the refusal it must give."""
        available = self.available(account)
        amount = min(max(want, least), max(available, 0) // LEASE_FRACTION)
        if amount >= least:
            return amount
        return least if available >= least else InsufficientFunds

    # -- acquire, extend, release --------------------------------------------------

    @rule(
        payer=st.sampled_from(["key:k0", "key:k1", "key:k2", "partner:p0", "key:nokey"]),
        want=WANTS,
        least=LEASTS,
    )
    def acquire_lease(self, payer, want, least):
        lid = self._id("lease")
        args = (lid, payer, None, (want, 0), (least, 0), TTL_S)
        if want > MAX_AMOUNT or least > MAX_AMOUNT:
            expected = OutOfRange
        elif want < 0 or least < 0:
            expected = InvalidArgument
        elif payer not in self.exists:
            expected = NotFound
        elif payer in self.closed:
            expected = AccountClosed
        else:
            expected = self._grant(payer, want, least)
        held = expected if isinstance(expected, int) else None
        out = self._call("ok" if held is not None else expected, self.leases.acquire, *args)
        if out is not None:
            assert (out.changed_ucr, out.held_ucr, out.status, out.replayed) == (held, held, "open", False)
            self.pending[payer] += held
            self.lease_book[lid] = dict(account=payer, held=held, status="open", granted=held, used=0, freed=0)
        if held is not None or expected in (InsufficientFunds, AccountClosed):
            self.history.append(("acquire", args, "ok" if held is not None else expected))

    @precondition(lambda self: self.lease_book)
    @rule(data=st.data(), want=WANTS, least=LEASTS)
    def extend_lease(self, data, want, least):
        lid = data.draw(st.sampled_from([*sorted(self.lease_book), NO_LEASE]))
        xid = self._id("grow")
        args = (xid, lid, (want, 0), (least, 0), TTL_S)
        lease = self.lease_book.get(lid)
        if want > MAX_AMOUNT or least > MAX_AMOUNT:
            expected = OutOfRange
        elif want < 0 or least < 0:
            expected = InvalidArgument
        elif lease is None:
            expected = NotFound
        elif lease["status"] != "open":
            expected = InsufficientFunds  # no longer open: stored like a refusal for funds
        elif lease["account"] in self.closed:
            expected = AccountClosed
        elif max(want, least) == 0:
            expected = 0  # a renewal: the expiry moves, nothing more is held
        else:
            expected = self._grant(lease["account"], want, least)
        add = expected if isinstance(expected, int) else None
        out = self._call("ok" if add is not None else expected, self.leases.extend, *args)
        if out is not None:
            lease["held"] += add
            lease["granted"] += add
            self.pending[lease["account"]] += add
            assert (out.changed_ucr, out.held_ucr, out.status, out.replayed) == (add, lease["held"], "open", False)
        if add is not None or expected is InsufficientFunds:
            self.history.append(("extend", args, "ok" if add is not None else expected))

    @precondition(lambda self: self.lease_book)
    @rule(data=st.data(), keep=st.sampled_from(["nothing", "some", "all", "more", "negative"]))
    def release_lease(self, data, keep):
        lid = data.draw(st.sampled_from([*sorted(self.lease_book), NO_LEASE]))
        lease = self.lease_book.get(lid)
        held = lease["held"] if lease else 0
        keep_ucr = {
            "nothing": 0,
            "some": data.draw(st.integers(0, max(held, 0))),
            "all": held,
            "more": held + 1,
            "negative": -1,
        }[keep]
        args = (self._id("release"), lid, (keep_ucr, 0))
        if keep_ucr < 0:
            self._call(InvalidArgument, self.leases.release, *args)
            return
        if lease is None:
            self._call(NotFound, self.leases.release, *args)
            return
        free = max(held - keep_ucr, 0) if lease["status"] == "open" else 0
        if not self._forward_fits(lease, free):
            self._call(OutOfRange, self.leases.release, *args)
            return
        out = self._call("ok", self.leases.release, *args)
        if lease["status"] == "open":
            self._release(lease, free, 0)  # freed: on a revoked key, on to the partner
            lease["held"] -= free
            lease["freed"] += free
            if keep_ucr == 0:
                lease["status"] = "closed"
        assert (out.changed_ucr, out.held_ucr, out.status, out.replayed) == (
            free,
            lease["held"],
            lease["status"],
            False,
        )
        self.history.append(("release", args, "ok"))

    @precondition(lambda self: any(h[0] in ("extend", "release") for h in self.history))
    @rule(data=st.data(), call=st.sampled_from(["extend", "release"]))
    def reuse_an_id_elsewhere(self, data, call):
        """An extension's or release's id used again for another lease, or for the other
        operation, is a conflict: not a replay of what it named first."""
        first, args, _ = data.draw(st.sampled_from([h for h in self.history if h[0] in ("extend", "release")]))
        others = [lid for lid in sorted(self.lease_book) if call != first or lid != args[1]]
        if not others:
            return
        lid = data.draw(st.sampled_from(others))
        if call == "extend":
            self._call(Conflict, self.leases.extend, args[0], lid, (0, 0), (0, 0), TTL_S)
        else:
            self._call(Conflict, self.leases.release, args[0], lid, (0, 0))

    # a revoke with a lease open: the lease's hold stays, and what it frees goes on (once
    # per run: a revoked key takes no lease, and the other rules revoke too)
    @precondition(lambda self: not self.closed)
    @rule(k=st.sampled_from(["k0", "k1", "k2"]), want=st.integers(1, 100_000))
    def revoke_with_a_lease_open(self, k, want):
        self.acquire_lease(f"key:{k}", want, 0)
        self.refund(k)

    # -- settlements ---------------------------------------------------------------

    def _draw_settlement(self, data, batch: list[LeasedSettlement]) -> LeasedSettlement:
        how = data.draw(st.sampled_from(["new", "new", "new", "retry", "in_batch", "elsewhere", "foreign", "nolease"]))
        if how == "retry" and self.leased:
            return self.leased[data.draw(st.sampled_from(sorted(self.leased)))]["settlement"]
        if how == "in_batch" and batch:
            return data.draw(st.sampled_from(batch))
        if how == "elsewhere" and self.leased and len(self.lease_book) > 1:
            s = self.leased[data.draw(st.sampled_from(sorted(self.leased)))]["settlement"]
            other = data.draw(st.sampled_from([lid for lid in sorted(self.lease_book) if lid != s.lease_id]))
            return dataclasses.replace(s, lease_id=other)
        lid = data.draw(st.sampled_from(sorted(self.lease_book)))
        if how == "nolease":
            lid = NO_LEASE
        rid = self._id("lreq")
        if how == "foreign":  # a plain reservation's id, or a lease's own
            rid = data.draw(st.sampled_from(sorted(self.reservations) + sorted(self.lease_book)))
        if data.draw(st.integers(0, 3)):
            price, tin, tout = data.draw(USAGE)
        else:  # the machine's requests: at the bounds of one amount, and beyond
            (price, tout), tin = data.draw(self.requests), data.draw(st.integers(0, 40))
        _, (p_in, p_out, version) = self.prices[price]
        return LeasedSettlement(lid, rid, price, p_in, p_out, version, tin, tout, "provider")

    @precondition(lambda self: self.lease_book)
    @rule(data=st.data(), size=st.integers(1, 4))
    def settle_leased(self, data, size):
        batch: list[LeasedSettlement] = []
        for _ in range(size):
            batch.append(self._draw_settlement(data, batch))
        self._settle_leased(batch)

    def _plan(self, batch: list[LeasedSettlement]):
        """What each settlement of the batch must answer, and what the batch moves."""
        expected: list = []
        new: dict[str, dict] = {}
        left: dict[str, int] = {}  # lease id -> what it still holds as the batch uses it
        spent: dict[str, int] = defaultdict(int)  # lease id -> taken from its hold
        extra: dict[str, int] = defaultdict(int)  # account -> taken from its available balance
        sinks: dict[str, int] = defaultdict(int)
        for s in batch:
            lease = self.lease_book.get(s.lease_id)
            prior = new.get(s.request_id) or self.leased.get(s.request_id)
            (per_in, per_out), _ = self.prices[s.model]
            charge = s.input_tokens * per_in + s.output_tokens * per_out
            if max(s.input_tokens, s.output_tokens) > MAX_TOKENS:
                expected.append(InvalidArgument)
            elif lease is None:
                expected.append(NotFound)
            elif prior is not None:
                expected.append(dict(prior, replayed=True) if prior["lease"] == s.lease_id else Conflict)
            elif s.request_id in self.reservations or s.request_id in self.lease_book:
                expected.append(Conflict)
            elif charge > MAX_AMOUNT:
                expected.append(OutOfRange)
            else:
                hold = left.setdefault(s.lease_id, lease["held"] if lease["status"] == "open" else 0)
                from_hold = min(charge, hold)
                left[s.lease_id] -= from_hold
                account = lease["account"]
                take = min(charge - from_hold, max(self.available(account) - extra[account], 0))
                extra[account] += take
                spent[s.lease_id] += from_hold
                sinks[usage_shard(s.request_id)] += from_hold + take
                out = dict(
                    lease=s.lease_id,
                    settlement=s,
                    from_hold=from_hold,
                    charged=from_hold + take,
                    unpaid=charge - from_hold - take,
                )
                new[s.request_id] = out
                expected.append(dict(out, replayed=False))
        overflow = any(amount and not self.fits(sink, amount) for sink, amount in sinks.items())
        return expected, new, spent, extra, sinks, overflow

    def _settle_leased(self, batch: list[LeasedSettlement]) -> None:
        expected, new, spent, extra, sinks, overflow = self._plan(batch)
        if overflow and len(batch) > 1:
            # a sink at the int64 edge fails the batch and the ledger settles each on its own,
            # concurrently (in no set order): the model takes them one batch of one at a time
            for s in batch:
                self._settle_leased([s])
            return
        if overflow:
            expected = [OutOfRange]
        before = self.run(self._books())
        outcomes = self.run(self.leases.settle(batch))
        assert len(outcomes) == len(batch)
        for s, want, got in zip(batch, expected, outcomes, strict=True):
            if isinstance(want, dict):
                assert isinstance(got, SettleOutcome), (s, got)
                assert (got.charged_ucr, got.unpaid_ucr, got.replayed) == (
                    want["charged"],
                    want["unpaid"],
                    want["replayed"],
                ), (s, want)
                assert got.held_ucr == want["from_hold"], (s, want)
            else:
                assert isinstance(got, want), (s, want, got)
        if overflow or not new:
            assert self.run(self._books()) == before, "a lease settlement refused or replayed but wrote"
            return
        for lid, used in spent.items():
            lease = self.lease_book[lid]
            lease["held"] -= used
            lease["used"] += used
            self.pending[lease["account"]] -= used
            self.debits[lease["account"]] += used
        for account, taken in extra.items():
            self.debits[account] += taken
        for sink, amount in sinks.items():
            self.credits[sink] += amount
            self.exists.add(sink)
        self.leased.update(new)

    # -- expiry (the machine's expire_all sweeps leases with reservations) -----------

    def _expire_leases(self, statuses: dict[str, str]) -> int:
        """Leases the sweep expired (read back, as for reservations): their holds are freed."""
        released = 0
        for lid, lease in self.lease_book.items():
            if lease["status"] == "open" and statuses.get(lid) == "expired":
                self._release(lease, lease["held"], 0)
                lease["freed"] += lease["held"]
                lease["status"] = "expired"
                released += lease["held"]
            elif lease["status"] == "open":
                assert not self._forward_fits(lease, lease["held"]), lid
        return released

    # -- invariant -----------------------------------------------------------------

    @invariant()
    def leases_add_up(self):
        async def read():
            async with self.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        text(
                            "SELECT request_id, kind, status, held_ucr, lease_id, charged_ucr, unpaid_ucr"
                            " FROM reservations WHERE kind = 'lease' OR lease_id <> ''"
                        )
                    )
                ).all()
                journal = (
                    await conn.execute(
                        text(
                            "SELECT t.request_id, t.kind, t.outcome, t.amount_ucr FROM transfers t"
                            " JOIN reservations r ON r.request_id = t.request_id WHERE r.kind = 'lease'"
                        )
                    )
                ).all()
            return rows, journal

        rows, journal = self.run(read())
        leases = {r.request_id: r for r in rows if r.kind == "lease"}
        assert set(leases) == set(self.lease_book)
        granted: dict[str, int] = defaultdict(int)
        freed: dict[str, int] = defaultdict(int)
        for rid, kind, outcome, amount in journal:
            if kind == "pending" and outcome == "ok":
                granted[rid] += amount
            elif kind in ("void", "expire"):
                freed[rid] += amount
        used: dict[str, int] = defaultdict(int)
        for r in rows:
            if r.kind != "lease":
                s = self.leased[r.request_id]
                assert (r.lease_id, r.held_ucr, r.charged_ucr, r.unpaid_ucr) == (
                    s["lease"],
                    s["from_hold"],
                    s["charged"],
                    s["unpaid"],
                ), r
                used[r.lease_id] += r.held_ucr
        assert {r.request_id for r in rows if r.kind != "lease"} == set(self.leased)
        for lid, m in self.lease_book.items():
            row = leases[lid]
            assert (row.status, row.held_ucr) == (STATUS[m["status"]], m["held"]), lid
            still = m["held"] if m["status"] == "open" else 0
            assert (granted[lid], used[lid], freed[lid]) == (m["granted"], m["used"], m["freed"]), lid
            assert m["granted"] == m["used"] + m["freed"] + still, lid  # nothing lost, nothing returned twice
        # spend + open holds (leases included) never above what a guarded account was given
        for account in self.exists:
            if not account.startswith("external:"):
                assert self.available(account) >= 0, account

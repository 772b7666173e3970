"""The ledger process dies at the worst moments; callers retry; every operation
happens exactly once — budget leases' too (acquire, extend, a settlement batch, release).

For each crash point the ledger is restarted with ``CG_LEDGER_CRASH_AT`` set, the
call kills it (the caller sees UNAVAILABLE), then a normal ledger comes back on the
same database and the caller retries the very same request.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, text

from cg_devstack.procs import Proc, free_port, grpc_serving, start_on_free_ports
from cglib.db import sync_url
from cglib.money import UCR_PER_CREDIT as CREDIT
from creditgate.ledger.v1 import ledger_pb2 as pb
from creditgate.ledger.v1 import ledger_pb2_grpc

HAIKU = pb.Price(input_usd_per_mtok="1.00", output_usd_per_mtok="5.00", price_book_version="v1")


@contextlib.contextmanager
def ledger(db_url: str, logs: Path, crash_at: str = "", **settings: str) -> Iterator[ledger_pb2_grpc.LedgerServiceStub]:
    def build() -> Proc:
        port = free_port()
        env = {
            "CG_LEDGER_PORT": str(port),
            "CG_LEDGER_METRICS_PORT": str(free_port()),
            "CG_LEDGER_DATABASE_URL": db_url,
        }
        env.update({f"CG_LEDGER_{k.upper()}": v for k, v in settings.items()})
        if crash_at:
            env["CG_CRASH_AT"] = crash_at
        proc = Proc.python_module(
            "ledger", "cg_ledger", env, logs / f"ledger-{crash_at or 'ok'}.log", grpc_serving(f"127.0.0.1:{port}")
        )
        proc.addr = f"127.0.0.1:{port}"
        return proc

    proc = start_on_free_ports(build)
    channel = grpc.insecure_channel(proc.addr)
    try:
        stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        stub.proc, stub.channel = proc, channel
        yield stub
    finally:
        channel.close()
        proc.stop()


# Each case: the operation, and what a successful run of it leaves behind.
FUND = pb.FundKeyRequest(idempotency_id="create:k", partner_id="p", key_id="k", budget_ucr=10 * CREDIT, fee_rate="0.05")
RESERVE = pb.ReserveRequest(
    request_id="req-1", account="key:k", model="m", price=HAIKU, max_input_tokens=100, max_output_tokens=100
)
SETTLE = pb.SettleRequest(request_id="req-1", input_tokens=10, output_tokens=20, usage_source=pb.USAGE_SOURCE_PROVIDER)


def setup_before(stub, op: str) -> None:
    stub.Deposit(pb.DepositRequest(idempotency_id="dep", account="partner:p", amount_ucr=100 * CREDIT), timeout=5)
    if op in ("reserve", "settle"):
        stub.FundKey(FUND, timeout=5)
    if op == "settle":
        stub.Reserve(RESERVE, timeout=5)


def call(stub, op: str):
    return {"fund": stub.FundKey, "reserve": stub.Reserve, "settle": stub.Settle}[op](
        {"fund": FUND, "reserve": RESERVE, "settle": SETTLE}[op], timeout=5
    )


def check_exactly_once(stub, op: str) -> None:
    key = stub.GetBalance(pb.GetBalanceRequest(account="key:k"), timeout=5)
    partner = stub.GetBalance(pb.GetBalanceRequest(account="partner:p"), timeout=5)
    assert partner.posted_ucr == 100 * CREDIT - 10_500_000  # budget + 5% fee, taken once
    if op == "fund":
        assert (key.posted_ucr, key.pending_ucr) == (10 * CREDIT, 0)
    elif op == "reserve":
        assert (key.posted_ucr, key.pending_ucr) == (10 * CREDIT, 60_000)
    else:
        assert (key.posted_ucr, key.pending_ucr) == (10 * CREDIT - 11_000, 0)
    statement = stub.ListTransfers(pb.ListTransfersRequest(account="key:k", page_size=100), timeout=5).transfers
    kinds = sorted(t.kind for t in statement)
    expected = {"fund": ["fund"], "reserve": ["fund", "pending"], "settle": ["fund", "pending", "post"]}[op]
    assert kinds == expected


@pytest.mark.parametrize("op", ["fund", "reserve", "settle"])
@pytest.mark.parametrize("when", ["before_commit", "after_commit"])
def test_crash_then_retry_applies_exactly_once(db_url, tmp_path, op, when):
    with ledger(db_url, tmp_path) as stub:
        setup_before(stub, op)
    with ledger(db_url, tmp_path, crash_at=f"{op}:{when}") as doomed:
        with pytest.raises(grpc.RpcError) as e:
            call(doomed, op)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert doomed.proc.popen.wait(10) == 137
    with ledger(db_url, tmp_path) as stub:
        out = call(stub, op)
        # after a commit the retry is answered from the record; before it, it is applied now
        assert out.replayed == (when == "after_commit")
        assert call(stub, op).replayed  # and any further retry is a replay
        check_exactly_once(stub, op)


def test_the_ledger_voids_stale_holds_by_itself(tmp_path):
    """A proxy that crashed after reserving never pins credits: the ledger's own sweep
    releases the hold once it expires."""
    import time

    with ledger(f"sqlite:///{tmp_path / 'l.db'}", tmp_path, expiry_sweep_s="0.2") as stub:
        setup_before(stub, "reserve")
        stub.Reserve(
            pb.ReserveRequest(
                request_id="orphan", account="key:k", model="m", price=HAIKU, max_output_tokens=100, ttl_seconds=1
            ),
            timeout=5,
        )
        assert stub.GetBalance(pb.GetBalanceRequest(account="key:k"), timeout=5).pending_ucr == 50_000
        deadline = time.monotonic() + 10
        while stub.GetBalance(pb.GetBalanceRequest(account="key:k"), timeout=5).pending_ucr:
            assert time.monotonic() < deadline, "the hold was never released"
            time.sleep(0.1)
        assert "reservations expired" in stub.proc.log_text()


# -- budget leases -----------------------------------------------------------------------
# One lease's whole life, interrupted at each of its crash points in turn: every ledger in
# the chain first retries the call the one before died in (applied now after a crash
# before the commit, a replay after one), checks the books, then makes the next call,
# which kills it at its own point. Ten ledger starts per database instead of three per
# point. The lease: 1 credit, grown by 1 credit, three requests settled in one batch
# (11,000 + 0 + 11,000 µcr), then released: the remainder goes back once. The key has an
# RPM limit, so acquire and extend grant 8 request slots each and the release gives the
# unused ones back (those not lapsed yet: it depends on how long the restarts took).
LEASE_ID = "lease-1"
RATE = pb.RateLimit(key="k", rpm=1000)
SLOTS = 8  # wanted, and granted (less than 1/8 of the 1000 left)
ACQUIRE = pb.AcquireLeaseRequest(
    lease_id=LEASE_ID,
    account="key:k",
    want_ucr=CREDIT,
    min_ucr=60_000,
    ttl_seconds=600,
    rate_limit=RATE,
    want_requests=SLOTS,
    min_requests=1,
)
EXTEND = pb.ExtendLeaseRequest(
    extension_id="lease-1:x1",
    lease_id=LEASE_ID,
    want_ucr=CREDIT,
    ttl_seconds=600,
    rate_limit=RATE,
    want_requests=SLOTS,
    min_requests=1,
)
SETTLE_LEASED = pb.SettleLeasedRequest(
    settlements=[
        pb.LeasedSettlement(
            lease_id=LEASE_ID,
            request_id=rid,
            model="m",
            price=HAIKU,
            input_tokens=tin,
            output_tokens=tout,
            usage_source=pb.USAGE_SOURCE_PROVIDER,
        )
        for rid, tin, tout in (("lr-1", 10, 20), ("lr-2", 0, 0), ("lr-3", 10, 20))
    ]
)
RELEASE = pb.ReleaseLeaseRequest(release_id="lease-1:r", lease_id=LEASE_ID, return_requests=2 * SLOTS)
SPENT = 22_000
LEASE_CHAIN = [  # (the point the ledger dies at, the call that gets it there)
    ("acquire_lease:before_commit", "acquire"),
    ("acquire_lease:after_commit", "acquire"),  # the retry of the call above dies here
    ("extend_lease:before_commit", "extend"),
    ("extend_lease:after_commit", "extend"),
    ("settle_leased:mid_batch", "settle"),
    ("settle_leased:before_commit", "settle"),
    ("settle_leased:after_commit", "settle"),
    ("release_lease:before_commit", "release"),
    ("release_lease:after_commit", "release"),
]
ADMIN_TOKEN = "crash-test-admin-token-0123456789"


def lease_call(stub, op: str):
    return {
        "acquire": lambda: stub.AcquireLease(ACQUIRE, timeout=5),
        "extend": lambda: stub.ExtendLease(EXTEND, timeout=5),
        "settle": lambda: stub.SettleLeased(SETTLE_LEASED, timeout=5),
        "release": lambda: stub.ReleaseLease(RELEASE, timeout=5),
    }[op]()


def replayed(op: str, out) -> bool:
    if op != "settle":
        return out.replayed
    assert [o.status_code for o in out.outcomes] == [0, 0, 0], out
    flags = {o.settled.replayed for o in out.outcomes}
    assert len(flags) == 1, out  # the batch is one transaction: all applied, or all replayed
    return flags.pop()


def slot_grants(db_url: str) -> dict[str, int]:
    """The key's request slot grants as the ledger keeps them (``rate_slots``): grant id ->
    requests still counted."""
    engine = create_engine(sync_url(db_url))
    try:
        with engine.connect() as conn:
            return {gid: int(n) for gid, n in conn.execute(text("SELECT grant_id, requests FROM rate_slots"))}
    finally:
        engine.dispose()


def check_slots(db_url: str, done: str, out, returned: int) -> None:
    """Each grant once, answered the same on a replay; a release's return taken once."""
    if done in ("acquire", "extend"):
        assert out.granted_requests == SLOTS, out
    grants = {LEASE_ID: SLOTS, "lease-1:x1": SLOTS} if done != "acquire" else {LEASE_ID: SLOTS}
    assert sum(slot_grants(db_url).values()) == sum(grants.values()) - returned
    assert set(slot_grants(db_url)) == set(grants)


def check_lease_books(stub, done: str) -> None:
    """The key's books once ``done`` (and everything before it) happened exactly once."""
    key = stub.GetBalance(pb.GetBalanceRequest(account="key:k"), timeout=5)
    partner = stub.GetBalance(pb.GetBalanceRequest(account="partner:p"), timeout=5)
    assert partner.posted_ucr == 100 * CREDIT - 10_500_000
    spent = SPENT if done in ("settle", "release") else 0
    held = {"acquire": CREDIT, "extend": 2 * CREDIT, "settle": 2 * CREDIT - SPENT, "release": 0}[done]
    assert (key.posted_ucr, key.pending_ucr) == (10 * CREDIT - spent, held)
    if spent:  # the usage sink (its shards summed) took each charge once
        assert stub.GetBalance(pb.GetBalanceRequest(account="platform:usage"), timeout=5).posted_ucr == spent
    statement = stub.ListTransfers(pb.ListTransfersRequest(account="key:k", page_size=100), timeout=5).transfers
    kinds = sorted(t.kind for t in statement)
    expected = {
        "acquire": ["fund", "pending"],
        "extend": ["fund", "pending", "pending"],
        "settle": ["fund", "pending", "pending", "post", "post", "post"],
        "release": ["fund", "pending", "pending", "post", "post", "post", "void"],
    }[done]
    assert kinds == expected, kinds


def test_a_lease_survives_a_crash_at_every_point_of_its_life(db_url, tmp_path):
    """A retry that runs into its own operation's next point dies there too (a retry after
    a crash before the commit applies the call, so it reaches ``after_commit``: were the
    first attempt committed after all, the retry would be a replay and answer instead)."""
    died_in, died_at = "", ""  # the call the previous ledger died in, and where
    returned = 0  # request slots the release took back
    for point, op in LEASE_CHAIN:
        with ledger(db_url, tmp_path, crash_at=point) as stub:
            if not died_in:
                setup_before(stub, "reserve")  # a partner with 100 credits, a key with 10
            elif died_in != op:
                out = lease_call(stub, died_in)
                # after a commit the retry is answered from the record; before it, applied now
                assert replayed(died_in, out) == died_at.endswith("after_commit"), point
                again = lease_call(stub, died_in)
                assert replayed(died_in, again), point  # and again: a replay
                check_lease_books(stub, died_in)
                if died_in == "release":
                    returned = out.granted_requests
                    assert again.granted_requests == returned  # the same return, answered again
                check_slots(db_url, died_in, again if died_in != "settle" else None, returned)
            with pytest.raises(grpc.RpcError) as e:
                lease_call(stub, op)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE, point
            assert stub.proc.popen.wait(10) == 137, point
            died_in, died_at = op, point
    with ledger(db_url, tmp_path, admin_token=ADMIN_TOKEN) as stub:
        freed = lease_call(stub, "release")
        assert freed.replayed and (freed.status, freed.held_ucr, freed.changed_ucr) == ("closed", 0, 2 * CREDIT - SPENT)
        check_lease_books(stub, "release")  # each request settled once, the remainder returned once
        check_slots(db_url, "release", freed, freed.granted_requests)
        key = stub.GetBalance(pb.GetBalanceRequest(account="key:k"), timeout=5)
        assert (key.available_ucr, key.pending_ucr) == (10 * CREDIT - SPENT, 0)  # nothing stuck
        admin = ledger_pb2_grpc.LedgerAdminServiceStub(stub.channel)
        report = admin.AuditBooks(pb.AuditBooksRequest(), metadata=(("x-cg-admin-token", ADMIN_TOKEN),), timeout=10)
        assert report.ok, report.discrepancies

"""Issue 10, finding 7: the books can be audited from outside (admin only).

LedgerAdminService lists every account (the external ones included) page by page and
audits the books: conservation per unit, no overdrawn or negative account, integer
counters, posted counters equal to the transfers, pending debits equal to the open
holds. Healthy books report nothing; a row changed behind the ledger's back is named
with the check it breaks and its account. Every call needs the admin token.
"""

from __future__ import annotations

import sqlite3
import time

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cg_devstack.procs import Proc, free_port, grpc_serving, start_on_free_ports
from cg_ledger.settings import Settings
from cglib.money import UCR_PER_CREDIT as CREDIT
from creditgate.ledger.v1 import ledger_pb2 as pb
from creditgate.ledger.v1 import ledger_pb2_grpc
from support.ledger import ADMIN, ADMIN_TOKEN, HAIKU, INT64_MAX, audit, code_of, running_ledger, sql

DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture
async def ledger(db_url):
    async with running_ledger(db_url) as ledger:
        yield ledger


async def busy_books(ledger) -> None:
    """A bit of everything: deposits, grants, funding with a fee, a key deposit, holds
    settled below / above / at, voided, expired, one still open, customer billing, a
    revoked key with a hold in flight, a refused reservation stored under its id."""
    s = ledger.stub
    await s.Deposit(pb.DepositRequest(idempotency_id="d1", account="partner:p1", amount_ucr=100 * CREDIT))
    await s.Deposit(pb.DepositRequest(idempotency_id="d2", account="partner:p2", amount_ucr=3 * CREDIT))
    await s.GrantAiCredits(
        pb.GrantAiCreditsRequest(idempotency_id="g", customer_account="customer:c1", amount_uai=5 * CREDIT)
    )
    await s.FundKey(
        pb.FundKeyRequest(idempotency_id="f1", partner_id="p1", key_id="k1", budget_ucr=10 * CREDIT, fee_rate="0.05")
    )
    await s.FundKey(pb.FundKeyRequest(idempotency_id="f2", partner_id="p1", key_id="k2", budget_ucr=CREDIT))
    await s.HoldKeyDeposit(pb.KeyDepositRequest(idempotency_id="h", partner_id="p2", key_id="ck", amount_ucr=CREDIT))
    billing = pb.CustomerBilling(
        customer_account="customer:c1",
        revenue_account="partnerrev:p1",
        profit_multiplier="2",
        price_per_ai_credit_cents="1",
    )
    for i in range(6):
        await s.Reserve(
            pb.ReserveRequest(
                request_id=f"r{i}",
                account="key:k1",
                model="m",
                price=HAIKU,
                max_input_tokens=100,
                max_output_tokens=100,
                customer=billing if i % 2 else None,
            )
        )
    await s.Reserve(
        pb.ReserveRequest(
            request_id="rp", account="partner:p2", model="m", price=HAIKU, max_output_tokens=100, ttl_seconds=1
        )
    )
    await s.Settle(
        pb.SettleRequest(request_id="r0", input_tokens=1, output_tokens=2, usage_source=pb.USAGE_SOURCE_PROVIDER)
    )
    await s.Settle(
        pb.SettleRequest(request_id="r1", input_tokens=1000, output_tokens=1000, usage_source=pb.USAGE_SOURCE_ESTIMATED)
    )
    await s.Void(pb.VoidRequest(request_id="r2"))
    await s.Reserve(
        pb.ReserveRequest(request_id="rk2", account="key:k2", model="m", price=HAIKU, max_output_tokens=100)
    )
    await s.RefundKey(pb.RefundKeyRequest(idempotency_id="refund:k2", partner_id="p1", key_id="k2"))
    # rp only: the others hold for 600 s
    await s.ExpireReservations(pb.ExpireReservationsRequest(now_unix_ms=int(time.time() * 1000) + 100_000))
    assert (
        await code_of(
            s.Reserve(
                pb.ReserveRequest(
                    request_id="too-big", account="key:k1", model="m", price=HAIKU, max_output_tokens=10**6
                )
            )
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    await s.Settle(pb.SettleRequest(request_id="rk2", output_tokens=10, usage_source=pb.USAGE_SOURCE_PROVIDER))
    await s.ReleaseKeyDeposit(pb.KeyDepositRequest(idempotency_id="rel", partner_id="p2", key_id="ck"))


async def test_healthy_books_pass_the_audit(ledger):
    await busy_books(ledger)
    report = await audit(ledger)
    assert report.ok and not report.discrepancies
    units = {u.unit: u for u in report.units}
    assert units["credits"].sum_posted == units["ai_credits"].sum_posted == "0"
    assert units["credits"].external_in == str(103 * CREDIT)
    assert units["ai_credits"].external_in == str(5 * CREDIT)
    holds = await ledger.stub.GetBalances(pb.GetBalancesRequest(accounts=["key:k1", "partner:p2", "customer:c1"]))
    assert units["credits"].sum_pending == str(
        sum(b.pending_ucr for b in holds.balances if not b.account.startswith("customer"))
    )
    assert report.accounts == units["credits"].accounts + units["ai_credits"].accounts
    assert report.transfers > 20


def _corrupt(db_url: str):
    """Runs SQL behind the ledger's back, its CHECK constraints out of the way."""
    if db_url.startswith("sqlite"):

        def run(ledger, statement: str):
            conn = sqlite3.connect(db_url.split(":///", 1)[1])
            conn.execute("PRAGMA ignore_check_constraints = ON")
            conn.execute(statement)
            conn.commit()
            conn.close()
    else:

        async def drop(ledger):
            for name in ("ck_accounts_no_overdraft", "ck_accounts_counters_non_negative"):
                await sql(ledger.engine, f"ALTER TABLE accounts DROP CONSTRAINT {name}")

        def run(ledger, statement: str):
            return drop(ledger), sql(ledger.engine, statement)

    return run


@pytest.mark.parametrize(
    "statement, expected",
    [
        (
            "UPDATE accounts SET credits_posted = credits_posted + 5 WHERE id = 'partner:p1'",
            {("posted_mismatch", "partner:p1"), ("conservation", "")},
        ),
        (
            "UPDATE accounts SET debits_pending = debits_pending + 7 WHERE id = 'key:k1'",
            {("pending_mismatch", "key:k1")},
        ),
        ("UPDATE accounts SET credits_pending = 3 WHERE id = 'customer:c1'", {("pending_mismatch", "customer:c1")}),
        (
            "INSERT INTO transfers (idempotency_id, kind, outcome, debit_account, credit_account, amount_ucr, memo,"
            " created_at_ms) VALUES ('ghost', 'transfer', 'ok', 'partner:p2', 'partner:p1', 9, '', 0)",
            {("posted_mismatch", "partner:p1"), ("posted_mismatch", "partner:p2")},
        ),
        (
            "UPDATE reservations SET status = 'voided' WHERE request_id = 'r3'",
            {("pending_mismatch", "key:k1"), ("pending_mismatch", "customer:c1")},
        ),
        (
            "UPDATE accounts SET debits_posted = credits_posted + 1 WHERE id = 'key:k1'",
            {("overdrawn", "key:k1"), ("posted_mismatch", "key:k1"), ("conservation", "")},
        ),
        (
            "UPDATE accounts SET credits_pending = -1 WHERE id = 'partner:p2'",
            {("negative", "partner:p2"), ("pending_mismatch", "partner:p2")},
        ),
    ],
)
async def test_a_corrupted_row_is_reported_with_its_check_and_account(ledger, db_url, statement, expected):
    await busy_books(ledger)
    steps = _corrupt(db_url)(ledger, statement)
    for step in steps or ():
        await step
    report = await audit(ledger)
    assert not report.ok
    assert {(d.check, d.account) for d in report.discrepancies} == expected, list(report.discrepancies)


async def test_counters_that_stopped_being_integers_are_reported(tmp_path):
    """The prober's book: SQLite stored an overflowed counter as a REAL. (Only a
    database with its CHECKs bypassed can hold one now; a BIGINT on PostgreSQL cannot.)"""
    db_url = f"sqlite:///{tmp_path / 'broken.db'}"
    async with running_ledger(db_url) as ledger:
        await busy_books(ledger)
        _corrupt(db_url)(
            ledger, f"UPDATE accounts SET credits_posted = credits_posted + {INT64_MAX} WHERE id = 'partner:p1'"
        )
        report = await audit(ledger)
        found = {(d.check, d.account) for d in report.discrepancies}
        assert {("not_integer", "partner:p1"), ("posted_mismatch", "partner:p1"), ("conservation", "")} <= found
        # the listing still answers (the value clamped to int64), so an operator can see it
        page = await ledger.admin.ListAccounts(pb.ListAccountsRequest(kind="partner"), metadata=ADMIN)
        assert {a.id: a.credits_posted for a in page.accounts}["partner:p1"] == INT64_MAX


async def test_list_accounts_pages_by_id_with_a_kind_filter(ledger):
    await busy_books(ledger)
    seen, token = [], ""
    while True:
        page = await ledger.admin.ListAccounts(pb.ListAccountsRequest(page_size=3, page_token=token), metadata=ADMIN)
        assert len(page.accounts) <= 3
        seen += [a.id for a in page.accounts]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert {
        "external:credits",
        "external:ai_credits",
        "platform:fees",
        "partner:p1",
        "key:k1",
        "keydeposit:ck",
        "customer:c1",
        "partnerrev:p1",
    } <= set(seen)
    assert any(a.startswith("platform:usage:") for a in seen)  # the usage sink's shards
    keys = await ledger.admin.ListAccounts(pb.ListAccountsRequest(kind="key"), metadata=ADMIN)
    assert [a.id for a in keys.accounts] == ["key:k1", "key:k2"]
    k2 = keys.accounts[1]
    assert (k2.closed_to, k2.unit, k2.debits_must_not_exceed_credits, k2.credits_posted - k2.debits_posted) == (
        "partner:p1",
        "credits",
        True,
        0,
    )
    ext = await ledger.admin.ListAccounts(pb.ListAccountsRequest(kind="external"), metadata=ADMIN)
    assert {a.id: a.debits_posted for a in ext.accounts} == {
        "external:ai_credits": 5 * CREDIT,
        "external:credits": 103 * CREDIT,
    }
    assert all(not a.debits_must_not_exceed_credits for a in ext.accounts)
    default = await ledger.admin.ListAccounts(pb.ListAccountsRequest(), metadata=ADMIN)
    assert [a.id for a in default.accounts] == seen and not default.next_page_token  # 0: up to 100


BAD_PAGING = [
    pb.ListAccountsRequest(page_size=1001),
    pb.ListAccountsRequest(page_size=-1),
    pb.ListAccountsRequest(page_token="not a token!"),
    pb.ListAccountsRequest(page_token="x" * 300),
    pb.ListAccountsRequest(kind="nope"),
]
WRONG_TOKENS = [
    (),
    (("x-cg-admin-token", "wrong"),),
    (("x-cg-admin-token", ADMIN_TOKEN[:-1]),),
    (("x-cg-admin-token", ADMIN_TOKEN + "x"),),
    (("x-cg-admin-token", ADMIN_TOKEN.upper()),),
]


async def test_list_accounts_refuses_bad_paging(ledger):
    for request in BAD_PAGING:
        assert await code_of(ledger.admin.ListAccounts(request, metadata=ADMIN)) == grpc.StatusCode.INVALID_ARGUMENT, (
            request
        )


async def test_admin_calls_need_the_token(ledger):
    for metadata in WRONG_TOKENS:
        assert await code_of(ledger.admin.AuditBooks(pb.AuditBooksRequest(), metadata=metadata)) == DENIED, metadata
        assert await code_of(ledger.admin.ListAccounts(pb.ListAccountsRequest(), metadata=metadata)) == DENIED


async def test_no_token_configured_refuses_every_admin_call(db_url):
    async with running_ledger(db_url, admin_token="") as ledger:
        for metadata in ((), (("x-cg-admin-token", ""),), ADMIN):
            assert await code_of(ledger.admin.AuditBooks(pb.AuditBooksRequest(), metadata=metadata)) == DENIED
            assert await code_of(ledger.admin.ListAccounts(pb.ListAccountsRequest(), metadata=metadata)) == DENIED


def test_a_weak_admin_token_stops_the_ledger_at_start():
    assert Settings(admin_token="").admin_token.get_secret_value() == ""
    for weak in ("short", "x" * 15, "bad token with spaces é" * 2):
        with pytest.raises(ValueError, match="CG_LEDGER_ADMIN_TOKEN"):
            Settings(admin_token=weak)


def test_the_ledger_process_serves_the_admin_service(tmp_path):
    """``python -m cg_ledger`` registers LedgerAdminService beside LedgerService, in
    reflection too, and reads its token from CG_LEDGER_ADMIN_TOKEN."""

    def build() -> Proc:
        port = free_port()
        env = {
            "CG_LEDGER_PORT": str(port),
            "CG_LEDGER_METRICS_PORT": str(free_port()),
            "CG_LEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
            "CG_LEDGER_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        proc = Proc.python_module(
            "ledger", "cg_ledger", env, tmp_path / "ledger.log", grpc_serving(f"127.0.0.1:{port}")
        )
        proc.addr = f"127.0.0.1:{port}"
        return proc

    proc = start_on_free_ports(build)
    try:
        with grpc.insecure_channel(proc.addr) as channel:
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            answer = next(
                reflection.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
                )
            )
            names = {s.name for s in answer.list_services_response.service}
            assert {"creditgate.ledger.v1.LedgerService", "creditgate.ledger.v1.LedgerAdminService"} <= names
            admin = ledger_pb2_grpc.LedgerAdminServiceStub(channel)
            assert admin.AuditBooks(pb.AuditBooksRequest(), metadata=ADMIN, timeout=5).ok
            with pytest.raises(grpc.RpcError) as e:
                admin.AuditBooks(pb.AuditBooksRequest(), timeout=5)
            assert e.value.code() == DENIED
    finally:
        proc.stop()

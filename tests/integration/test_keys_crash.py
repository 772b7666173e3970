"""Keys and ledger never disagree: either process is killed between the money step and
the key step of create, top-up and revoke, comes back, the caller retries with the same
idempotency key, and the books and the keys agree (money moved exactly once). A create
whose first call never answered shows its secret to the retry that activates the key."""

from __future__ import annotations

import uuid

import grpc
import pytest

from cg_devstack import Stack
from cglib.keysecret import hash_secret
from cglib.money import UCR_PER_CREDIT as CREDIT
from creditgate.keys.v1 import keys_pb2 as pb
from creditgate.keys.v1 import keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2 as lpb
from creditgate.ledger.v1 import ledger_pb2_grpc
from support.stacks import KEYS_AND_LEDGER, stack_on

T = 10
CASES = [
    # (operation, process killed, its crash point)
    ("create", "keys", "create:after_funding"),
    ("create", "ledger", "fund:after_commit"),
    ("topup", "keys", "topup:after_funding"),
    ("topup", "ledger", "fund:after_commit"),
    ("revoke", "keys", "revoke:before_refund"),
    ("revoke", "ledger", "refund:after_commit"),
]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request):
    # the reconciler stays out of the way: this test shows the caller's retry converging
    with stack_on(request, KEYS_AND_LEDGER, env={"keys": {"CG_KEYS_RECONCILE_EVERY_S": "3600"}}) as s:
        yield s


def restart(stack: Stack, name: str, crash_at: str = "") -> None:
    stack.stop_service(name)
    env = dict(stack.config.env.get(name, {}))
    env.pop("CG_CRASH_AT", None)
    if crash_at:
        env["CG_CRASH_AT"] = crash_at
    stack.config.env[name] = env
    stack.start_service(name)


@pytest.mark.parametrize("op, victim, point", CASES)
def test_killed_between_money_and_key_then_retried(stack, op, victim, point):
    keys_ch, ledger_ch = grpc.insecure_channel(stack.keys_addr), grpc.insecure_channel(stack.ledger_addr)
    keys, ledger = keys_pb2_grpc.KeysServiceStub(keys_ch), ledger_pb2_grpc.LedgerServiceStub(ledger_ch)
    try:
        p = keys.CreatePartner(
            pb.CreatePartnerRequest(name="P", tier="growth", external_ref=uuid.uuid4().hex), timeout=T
        )
        actor = pb.Actor(partner_id=p.id)
        ledger.Deposit(
            lpb.DepositRequest(idempotency_id=uuid.uuid4().hex, account=f"partner:{p.id}", amount_ucr=1_000 * CREDIT),
            timeout=T,
        )
        create = pb.CreateKeyRequest(
            actor=actor,
            idempotency_key=uuid.uuid4().hex,
            budget_credits=100,
            fields=pb.KeyFields(name="k", allowed_models=["gpt-4o-mini"]),
        )
        key_id = keys.CreateKey(create, timeout=T).key.id if op != "create" else None
        topup = pb.TopUpKeyRequest(actor=actor, key_id=key_id or "", idempotency_key="top-1", amount_credits=40)
        revoke = pb.RevokeKeyRequest(actor=actor, key_id=key_id or "")
        call = {
            "create": lambda: keys.CreateKey(create, timeout=T),
            "topup": lambda: keys.TopUpKey(topup, timeout=T),
            "revoke": lambda: keys.RevokeKey(revoke, timeout=T),
        }[op]

        restart(stack, victim, crash_at=point)
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert stack.procs[victim].popen.wait(10) == 137
        restart(stack, victim)

        # before the retry: the money may have moved, but no usable key is half made
        if op == "create":
            assert keys.ListKeys(pb.ListKeysRequest(actor=actor), timeout=T).keys == []
        out = call()  # the retry, same idempotency key
        key_id = key_id or out.key.id
        again = call()  # and once more: nothing changes
        if op == "create":
            # the first call never answered, so nobody saw a secret: the retry activates
            # the key with its own; the next retry is a replay, which shows none
            assert out.secret and not out.replayed
            assert again.replayed and again.secret == ""
            authed = keys.AuthenticateKey(pb.AuthenticateKeyRequest(key_hash=hash_secret(out.secret)), timeout=T)
            assert authed.key.id == key_id

        listed = keys.ListKeys(pb.ListKeysRequest(actor=actor, include_revoked=True), timeout=T).keys
        assert [k.id for k in listed] == [key_id]
        key = listed[0]
        partner = ledger.GetBalance(lpb.GetBalanceRequest(account=f"partner:{p.id}"), timeout=T).posted_ucr
        budget = ledger.GetBalance(lpb.GetBalanceRequest(account=f"key:{key_id}"), timeout=T).posted_ucr
        fee = {"create": 5, "topup": 5 + 2, "revoke": 5}[op] * CREDIT
        funded = {"create": 100, "topup": 140, "revoke": 100}[op] * CREDIT
        assert key.funded_ucr == funded
        if op == "revoke":
            assert key.status == pb.KEY_STATUS_REVOKED
            assert (budget, partner) == (0, 1_000 * CREDIT - fee)  # refunded once, fee kept
        else:
            assert key.status == pb.KEY_STATUS_ACTIVE
            assert (budget, partner) == (funded, 1_000 * CREDIT - funded - fee)
    finally:
        keys_ch.close()
        ledger_ch.close()

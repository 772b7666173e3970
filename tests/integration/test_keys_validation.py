"""Input validation of the keys service, over real processes (nats, ledger, keys) on
SQLite and PostgreSQL.

Bad input is INVALID_ARGUMENT whose text starts with the offending field's name
("name:", "allowed_models[1]:", "billing.profit_multiplier:" ...), and nothing is
written: the partner's ledger balance and its ``ListKeys(include_revoked=True)`` are
exactly what they were, and a refused create leaves its idempotency key unused.
Also: a create the partner's balance cannot cover is refused for good under its
idempotency key, and QuoteKey says exactly what CreateKey then takes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest

from cg_devstack import Stack
from cglib.money import UCR_PER_CREDIT as CREDIT
from creditgate.keys.v1 import keys_pb2 as pb
from creditgate.keys.v1 import keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2 as pb_ledger
from creditgate.ledger.v1 import ledger_pb2_grpc
from support.stacks import KEYS_AND_LEDGER, shared_stack

T = 10  # seconds, every call
IA = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def keys_stack(request) -> Stack:
    return shared_stack(request, KEYS_AND_LEDGER)


@dataclass
class Env:
    keys: keys_pb2_grpc.KeysServiceStub
    ledger: ledger_pb2_grpc.LedgerServiceStub
    partners: dict[str, str]  # "P" enterprise, "Q" another enterprise partner, "S" starter
    customers: dict[str, str]  # "C" of P, "QC" of Q
    key_of_p: str  # a partner key of P, for UpdateKey / TopUpKey

    def actor(self, partner: str) -> pb.Actor:
        return pb.Actor(partner_id=self.partners[partner])

    def partner(self, tier: str, credits: int) -> str:
        pid = self.keys.CreatePartner(
            pb.CreatePartnerRequest(name=f"{tier} partner", tier=tier, external_ref=f"val-{uuid.uuid4().hex}"),
            timeout=T,
        ).id
        if credits:
            self.deposit(pid, credits)
        return pid

    def deposit(self, partner_id: str, credits: int) -> None:
        self.ledger.Deposit(
            pb_ledger.DepositRequest(
                idempotency_id=f"dep-{uuid.uuid4().hex}", account=f"partner:{partner_id}", amount_ucr=credits * CREDIT
            ),
            timeout=T,
        )

    def balance(self, partner_id: str) -> pb_ledger.Balance | None:
        try:
            return self.ledger.GetBalance(pb_ledger.GetBalanceRequest(account=f"partner:{partner_id}"), timeout=T)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def list_keys(self, partner_id: str) -> pb.ListKeysResponse:
        return self.keys.ListKeys(
            pb.ListKeysRequest(actor=pb.Actor(partner_id=partner_id), include_revoked=True), timeout=T
        )

    def snapshot(self, partner_id: str):
        return self.balance(partner_id), self.list_keys(partner_id)

    def create_key(self, partner: str, fields: pb.KeyFields, budget: int = 10, idem: str = "") -> pb.CreateKeyResponse:
        return self.keys.CreateKey(
            pb.CreateKeyRequest(
                actor=self.actor(partner),
                idempotency_key=idem or uuid.uuid4().hex,
                fields=fields,
                budget_credits=budget,
            ),
            timeout=T,
        )


@pytest.fixture(scope="module")
def env(keys_stack: Stack) -> Iterator[Env]:
    keys_ch = grpc.insecure_channel(keys_stack.keys_addr)
    ledger_ch = grpc.insecure_channel(keys_stack.ledger_addr)
    e = Env(keys_pb2_grpc.KeysServiceStub(keys_ch), ledger_pb2_grpc.LedgerServiceStub(ledger_ch), {}, {}, "")
    e.partners = {
        "P": e.partner("enterprise", 100_000),
        "Q": e.partner("enterprise", 1_000),
        "S": e.partner("starter", 1_000),
    }
    for label, partner in (("C", "P"), ("QC", "Q")):
        e.customers[label] = e.keys.CreateCustomer(
            pb.CreateCustomerRequest(actor=e.actor(partner), name=f"customer {label}", ai_credits_enabled=True),
            timeout=T,
        ).id
    e.key_of_p = e.create_key("P", pb.KeyFields(name="existing", allowed_models=["gpt-4o-mini"])).key.id
    yield e
    keys_ch.close()
    ledger_ch.close()


def assert_refused(
    env: Env, partner_id: str, call: Callable[[], object], field: str, code: grpc.StatusCode = IA
) -> str:
    """``call`` fails with ``code`` naming ``field`` first, and writes nothing."""
    before = env.snapshot(partner_id)
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() == code, f"{e.value.code().name}: {e.value.details()}"
    details = e.value.details() or ""
    assert details.startswith(f"{field}:"), f"expected the field {field!r} first: {details!r}"
    balance, keys = env.snapshot(partner_id)
    assert balance == before[0], "a refused call moved the partner's credits"
    assert keys == before[1], "a refused call changed the partner's keys"
    return details


# -- CreateKey ------------------------------------------------------------------------

NOW = int(time.time())


def fields(**overrides) -> pb.KeyFields:
    f = pb.KeyFields(name="k", allowed_models=["gpt-4o-mini"])
    for name, value in overrides.items():
        if name in ("billing", "auto_topup"):
            getattr(f, name).CopyFrom(value)
        elif name in ("allowed_models", "allowed_domains"):
            del getattr(f, name)[:]
            getattr(f, name).extend(value)
        else:
            setattr(f, name, value)
    return f


def billing(customer: str = "C", multiplier: str = "2", cents: str = "1", floor: str = "") -> pb.CustomerBilling:
    # customer: a label ("C", "QC") resolved against the env, or a literal id
    return pb.CustomerBilling(
        customer_id=customer, profit_multiplier=multiplier, price_per_ai_credit_cents=cents, floor_usd_per_mtok=floor
    )


BAD_DOMAINS = [
    "exa mple.com",
    "*.*.com",
    "-bad.com",
    "http://x.com",
    "*",
    "localhost",
    "bad-.com",
    "a..com",
    "exa_mple.com",
    "app.example.com/path",
    "",
]

# id -> (partner, fields, budget_credits, the field named)
CREATE_CASES: dict[str, tuple[str, pb.KeyFields, int, str]] = {
    "empty name": ("P", fields(name=""), 10, "name"),
    "blank name": ("P", fields(name="   "), 10, "name"),
    "201-char name": ("P", fields(name="n" * 201), 10, "name"),
    "name with a newline": ("P", fields(name="two\nlines"), 10, "name"),
    "2001-char description": ("P", fields(description="d" * 2001), 10, "description"),
    "description with NUL": ("P", fields(description="a\x00b"), 10, "description"),
    "negative budget": ("P", fields(), -1, "budget_credits"),
    "zero budget": ("P", fields(), 0, "budget_credits"),
    "budget 10**12": ("P", fields(), 10**12, "budget_credits"),
    "budget just over the cap": ("P", fields(), 1_000_000_001, "budget_credits"),
    "no model": ("P", fields(allowed_models=[]), 10, "allowed_models"),
    "unknown model": ("P", fields(allowed_models=["gpt-4o-mini", "no-such-model"]), 10, "allowed_models[1]"),
    "mid model on starter": ("S", fields(allowed_models=["gpt-4o-mini", "claude-haiku-4-5"]), 10, "allowed_models[1]"),
    "premium model on starter": ("S", fields(allowed_models=["gpt-4o"]), 10, "allowed_models[0]"),
    "101 models": ("P", fields(allowed_models=["gpt-4o-mini"] * 101), 10, "allowed_models"),
    **{f"domain {d!r}": ("P", fields(allowed_domains=[d]), 10, "allowed_domains[0]") for d in BAD_DOMAINS},
    "bad second domain": ("P", fields(allowed_domains=["app.example.com", "http://x.com"]), 10, "allowed_domains[1]"),
    "101 domains": ("P", fields(allowed_domains=[f"h{i}.example.com" for i in range(101)]), 10, "allowed_domains"),
    **{
        f"profit multiplier {m!r}": ("P", fields(billing=billing(multiplier=m)), 10, "billing.profit_multiplier")
        for m in ("0", "-1", "abc", "", "NaN", "Infinity")
    },
    **{
        f"price per AI credit {c!r}": ("P", fields(billing=billing(cents=c)), 10, "billing.price_per_ai_credit_cents")
        for c in ("0", "-1", "abc")
    },
    "negative floor": ("P", fields(billing=billing(floor="-1")), 10, "billing.floor_usd_per_mtok"),
    "billing another partner's customer": ("P", fields(billing=billing(customer="QC")), 10, "billing.customer_id"),
    "billing a nonexistent customer": ("P", fields(billing=billing(customer="cus_nope")), 10, "billing.customer_id"),
    "auto top-up amount '0'": (
        "P",
        fields(auto_topup=pb.AutoTopUp(enabled=True, threshold_usd="5", amount_usd="0")),
        10,
        "auto_topup.amount_usd",
    ),
    "auto top-up amount missing": (
        "P",
        fields(auto_topup=pb.AutoTopUp(enabled=True, threshold_usd="5")),
        10,
        "auto_topup.amount_usd",
    ),
    "auto top-up threshold 'abc'": (
        "P",
        fields(auto_topup=pb.AutoTopUp(enabled=True, threshold_usd="abc", amount_usd="10")),
        10,
        "auto_topup.threshold_usd",
    ),
    "rpm -1": ("P", fields(rpm_limit=-1), 10, "rpm_limit"),
    "rpm 10**8": ("P", fields(rpm_limit=10**8), 10, "rpm_limit"),
    "tpm -1": ("P", fields(tpm_limit=-1), 10, "tpm_limit"),
    "expiry in the past": ("P", fields(expires_at_unix=NOW - 60), 10, "expires_at_unix"),
    "expiry negative": ("P", fields(expires_at_unix=-1), 10, "expires_at_unix"),
    "expiry in 11 years": ("P", fields(expires_at_unix=NOW + 11 * 365 * 86400), 10, "expires_at_unix"),
}


def _resolve(env: Env, f: pb.KeyFields) -> pb.KeyFields:
    out = pb.KeyFields()
    out.CopyFrom(f)
    if out.HasField("billing"):
        out.billing.customer_id = env.customers.get(out.billing.customer_id, out.billing.customer_id)
    return out


@pytest.mark.parametrize(
    ("partner", "bad", "budget", "field"), [pytest.param(*case, id=name) for name, case in CREATE_CASES.items()]
)
def test_create_key_refuses(env: Env, partner: str, bad: pb.KeyFields, budget: int, field: str) -> None:
    idem = uuid.uuid4().hex
    assert_refused(env, env.partners[partner], lambda: env.create_key(partner, _resolve(env, bad), budget, idem), field)
    # nothing was stored under the idempotency key either: fixed input goes through with it
    good = env.create_key(partner, fields(name="fixed"), 10, idem)
    assert good.key.name == "fixed" and good.key.status == pb.KEY_STATUS_ACTIVE


def test_create_key_refuses_a_long_idempotency_key(env: Env) -> None:
    assert_refused(env, env.partners["P"], lambda: env.create_key("P", fields(), 10, "i" * 121), "idempotency_key")


def test_boundaries_are_accepted(env: Env) -> None:
    got = env.create_key(
        "P",
        fields(name="n" * 200, allowed_models=["gpt-4o-mini"] * 100, rpm_limit=10_000_000, expires_at_unix=NOW + 3600),
        budget=1,
    ).key
    assert len(got.name) == 200
    assert list(got.allowed_models) == ["gpt-4o-mini"]
    assert got.rpm_limit == 10_000_000 and got.expires_at_unix == NOW + 3600


def test_valid_domains_are_accepted_lower_cased(env: Env) -> None:
    got = env.create_key("P", fields(allowed_domains=["App.Example.COM", "*.EXAMPLE.com"])).key
    assert list(got.allowed_domains) == ["app.example.com", "*.example.com"]
    listed = {k.id: k for k in env.list_keys(env.partners["P"]).keys}[got.id]
    assert list(listed.allowed_domains) == ["app.example.com", "*.example.com"]


def test_valid_billing_and_auto_topup_are_stored(env: Env) -> None:
    wanted = fields(
        billing=billing(multiplier="2.5", cents="1.2"),
        auto_topup=pb.AutoTopUp(enabled=True, threshold_usd="5", amount_usd="20"),
    )
    got = env.create_key("P", _resolve(env, wanted)).key
    assert got.billing.customer_id == env.customers["C"]
    assert (got.billing.profit_multiplier, got.billing.price_per_ai_credit_cents) == ("2.5", "1.2")
    assert got.auto_topup.enabled and got.auto_topup.amount_usd == "20"


# -- UpdateKey ------------------------------------------------------------------------

# id -> (fields, mask, the field named)
UPDATE_CASES: dict[str, tuple[pb.KeyFields, list[str], str]] = {
    "unknown mask field": (fields(name="x"), ["colour"], "update_mask"),
    "mask names a read-only field": (fields(name="x"), ["status"], "update_mask"),
    "empty mask": (fields(name="x"), [], "update_mask"),
    "empty name": (fields(name=""), ["name"], "name"),
    "valid name, bad rpm": (fields(name="changed?", rpm_limit=-1), ["name", "rpm_limit"], "rpm_limit"),
    "unknown model": (fields(allowed_models=["no-such-model"]), ["allowed_models"], "allowed_models[0]"),
    "no model": (fields(allowed_models=[]), ["allowed_models"], "allowed_models"),
    "bad domain": (fields(allowed_domains=["localhost"]), ["allowed_domains"], "allowed_domains[0]"),
    "multiplier 0": (fields(billing=billing(multiplier="0")), ["billing"], "billing.profit_multiplier"),
    "another partner's customer": (fields(billing=billing(customer="QC")), ["billing"], "billing.customer_id"),
    "auto top-up amount 0": (
        fields(auto_topup=pb.AutoTopUp(enabled=True, threshold_usd="1", amount_usd="0")),
        ["auto_topup"],
        "auto_topup.amount_usd",
    ),
    "tpm 10**8": (fields(tpm_limit=10**8), ["tpm_limit"], "tpm_limit"),
    "expiry in the past": (fields(expires_at_unix=NOW - 60), ["expires_at_unix"], "expires_at_unix"),
}


@pytest.mark.parametrize(
    ("bad", "mask", "field"), [pytest.param(*case, id=name) for name, case in UPDATE_CASES.items()]
)
def test_update_key_refuses(env: Env, bad: pb.KeyFields, mask: list[str], field: str) -> None:
    assert_refused(
        env,
        env.partners["P"],
        lambda: env.keys.UpdateKey(
            pb.UpdateKeyRequest(actor=env.actor("P"), key_id=env.key_of_p, fields=_resolve(env, bad), update_mask=mask),
            timeout=T,
        ),
        field,
    )


def test_update_key_accepts_valid_domains_lower_cased(env: Env) -> None:
    key = env.create_key("P", fields(name="to update")).key
    got = env.keys.UpdateKey(
        pb.UpdateKeyRequest(
            actor=env.actor("P"),
            key_id=key.id,
            fields=fields(allowed_domains=["APP.example.com", "*.Example.Com"]),
            update_mask=["allowed_domains"],
        ),
        timeout=T,
    )
    assert list(got.allowed_domains) == ["app.example.com", "*.example.com"]
    assert got.name == "to update"  # not in the mask: unchanged


# -- other calls ----------------------------------------------------------------------


def test_create_partner_refuses_an_unknown_tier(env: Env) -> None:
    ref = f"val-tier-{uuid.uuid4().hex}"
    with pytest.raises(grpc.RpcError) as e:
        env.keys.CreatePartner(pb.CreatePartnerRequest(name="Tiered", tier="platinum", external_ref=ref), timeout=T)
    assert e.value.code() == IA and e.value.details().startswith("tier:"), e.value.details()
    # nothing was written: the same external_ref now makes a fresh partner with the valid tier
    made = env.keys.CreatePartner(pb.CreatePartnerRequest(name="Tiered", tier="growth", external_ref=ref), timeout=T)
    assert made.tier == "growth" and made.external_ref == ref


def test_create_partner_refuses_an_empty_name(env: Env) -> None:
    ref = f"val-name-{uuid.uuid4().hex}"
    with pytest.raises(grpc.RpcError) as e:
        env.keys.CreatePartner(pb.CreatePartnerRequest(name="", tier="growth", external_ref=ref), timeout=T)
    assert e.value.code() == IA and e.value.details().startswith("name:"), e.value.details()


@pytest.mark.parametrize(
    ("idem", "amount", "field"),
    [
        pytest.param("", 5, "idempotency_key", id="no idempotency key"),
        pytest.param("i" * 121, 5, "idempotency_key", id="121-char idempotency key"),
        pytest.param("top-up-zero", 0, "amount_credits", id="zero amount"),
        pytest.param("top-up-negative", -5, "amount_credits", id="negative amount"),
    ],
)
def test_top_up_key_refuses(env: Env, idem: str, amount: int, field: str) -> None:
    assert_refused(
        env,
        env.partners["P"],
        lambda: env.keys.TopUpKey(
            pb.TopUpKeyRequest(actor=env.actor("P"), key_id=env.key_of_p, idempotency_key=idem, amount_credits=amount),
            timeout=T,
        ),
        field,
    )


@pytest.mark.parametrize("budget", [0, -1, 10**12])
def test_quote_key_refuses_a_bad_budget(env: Env, budget: int) -> None:
    assert_refused(
        env,
        env.partners["P"],
        lambda: env.keys.QuoteKey(pb.QuoteKeyRequest(actor=env.actor("P"), budget_credits=budget), timeout=T),
        "budget_credits",
    )


# -- money ----------------------------------------------------------------------------


def test_too_few_credits_refuses_for_good_under_that_idempotency_key(env: Env) -> None:
    pid = env.partner("enterprise", 5)  # a 10-credit key takes 10.2
    env.partners["poor"] = pid
    idem = uuid.uuid4().hex
    before = env.balance(pid)
    with pytest.raises(grpc.RpcError) as e:
        env.create_key("poor", fields(), 10, idem)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
    assert list(env.list_keys(pid).keys) == []
    assert env.balance(pid) == before

    env.deposit(pid, 100)
    funded = env.balance(pid)
    assert funded.available_ucr == 105 * CREDIT
    with pytest.raises(grpc.RpcError) as e:  # the refusal is stored: a retry does not turn into a key
        env.create_key("poor", fields(), 10, idem)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
    assert list(env.list_keys(pid).keys) == []
    assert env.balance(pid) == funded

    made = env.create_key("poor", fields(), 10, uuid.uuid4().hex)
    assert made.total_ucr == 10_200_000 and made.fee_ucr == 200_000
    assert [k.id for k in env.list_keys(pid).keys] == [made.key.id]
    assert env.balance(pid).available_ucr == 105 * CREDIT - 10_200_000


def test_a_partner_with_no_credits_at_all_cannot_create_a_key(env: Env) -> None:
    pid = env.partner("enterprise", 0)
    env.partners["empty"] = pid
    with pytest.raises(grpc.RpcError) as e:
        env.create_key("empty", fields(), 10)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
    assert list(env.list_keys(pid).keys) == []
    assert env.balance(pid) is None or env.balance(pid).posted_ucr == 0


@pytest.mark.parametrize(
    ("tier", "fee_rate", "total_credits"),
    [
        ("enterprise", "0.02", 102),
        ("growth", "0.05", 105),
        ("starter", "0.10", 110),
    ],
)
def test_quote_is_what_create_takes(env: Env, tier: str, fee_rate: str, total_credits: int) -> None:
    pid = env.partner(tier, 1_000)
    env.partners[tier] = pid
    quote = env.keys.QuoteKey(pb.QuoteKeyRequest(actor=pb.Actor(partner_id=pid), budget_credits=100), timeout=T)
    assert (quote.budget_ucr, quote.fee_ucr, quote.total_ucr) == (
        100 * CREDIT,
        (total_credits - 100) * CREDIT,
        total_credits * CREDIT,
    )
    assert quote.fee_rate == fee_rate
    before = env.balance(pid)
    made = env.create_key(tier, fields(), 100)
    assert (made.total_ucr, made.fee_ucr) == (quote.total_ucr, quote.fee_ucr)
    assert made.key.funded_ucr == quote.budget_ucr
    assert env.balance(pid).available_ucr == before.available_ucr - quote.total_ucr


# -- an idempotency key reused for something else --------------------------------------
# The service already refuses an idempotency key reused for another kind of key with
# INVALID_ARGUMENT "idempotency_key: ..."; reusing one with another amount is the same
# kind of bad input and must get the same clean answer (not an UNKNOWN carrying the
# ledger's internals), with nothing written.


def test_create_key_idempotency_key_reused_with_another_budget(env: Env) -> None:
    idem = uuid.uuid4().hex
    first = env.create_key("P", fields(name="once"), 10, idem)
    again = env.create_key("P", fields(name="once"), 10, idem)  # a true retry converges
    assert again.key.id == first.key.id and again.total_ucr == first.total_ucr
    assert_refused(
        env, env.partners["P"], lambda: env.create_key("P", fields(name="once"), 20, idem), "idempotency_key"
    )


def test_top_up_idempotency_key_reused_with_another_amount(env: Env) -> None:
    key_id = env.create_key("P", fields(name="topped")).key.id

    def top_up(amount: int) -> pb.TopUpKeyResponse:
        return env.keys.TopUpKey(
            pb.TopUpKeyRequest(actor=env.actor("P"), key_id=key_id, idempotency_key="top-up-1", amount_credits=amount),
            timeout=T,
        )

    assert top_up(5).amount_ucr == 5 * CREDIT
    assert top_up(5).key.funded_ucr == 15 * CREDIT  # a true retry adds nothing
    assert_refused(env, env.partners["P"], lambda: top_up(7), "idempotency_key")


@pytest.mark.parametrize("field, value", [("external_ref", "ref\x00nul"), ("external_ref", "x" * 201)])
def test_create_partner_refuses_an_unstorable_external_ref(env: Env, field: str, value: str) -> None:
    # PostgreSQL text holds no NUL: refused as the caller's mistake, not an internal error
    with pytest.raises(grpc.RpcError) as e:
        env.keys.CreatePartner(pb.CreatePartnerRequest(name="Ref", tier="growth", **{field: value}), timeout=T)
    assert e.value.code() == IA and e.value.details().startswith(f"{field}:"), e.value.details()

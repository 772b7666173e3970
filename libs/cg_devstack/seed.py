"""Demo data and small factories: a partner with credits and a funded virtual key, a demo
customer, and the demo users who sign in to the portal.

Everything is idempotent: the partner by external reference, the customer by idempotency
key, money moves by idempotency id, and the demo key's secret is kept in
``var/demo-key.json`` (it is shown once by the keys service, so this development-only
file is how a second ``make run`` keeps the same working key). The demo users' passwords
are made once and kept in ``var/demo-users.json`` the same way; the users themselves are
made through the BFF's management API, as the platform admin and then the partner's
owner would (only the BFF knows users), and only when they do not exist yet.
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc

from cg_devstack.bff import BffClient, invite_and_accept
from cg_devstack.certs import sync_channel
from cglib.keysecret import hash_secret
from cglib.money import UCR_PER_CREDIT
from creditgate.keys.v1 import keys_pb2, keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc

DEMO_MODELS = ["gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"]
TIMEOUT = 5


@dataclass
class FundedKey:
    partner_id: str
    key_id: str
    secret: str
    account: str
    models: list[str]


class Seeder:
    """Makes demo data through the keys and ledger services. With ``certs_dir`` (a stack
    with mutual TLS, ``Stack.certs_dir``) each call goes as the service that makes it in
    production: partners, deposits and keys as the BFF (``keys``, ``ledger``), a key's
    secret checked as the proxy, a balance read as the worker."""

    def __init__(self, keys_addr: str, ledger_addr: str, certs_dir: Path | None = None) -> None:
        self._keys_ch = sync_channel(keys_addr, certs_dir, "bff")
        self._ledger_ch = sync_channel(ledger_addr, certs_dir, "bff")
        self._channels = [self._keys_ch, self._ledger_ch]
        auth_ch, reads_ch = self._keys_ch, self._ledger_ch
        if certs_dir is not None:
            auth_ch, reads_ch = (
                sync_channel(keys_addr, certs_dir, "proxy"),
                sync_channel(ledger_addr, certs_dir, "worker"),
            )
            self._channels += [auth_ch, reads_ch]
        self.keys = keys_pb2_grpc.KeysServiceStub(self._keys_ch)
        self.ledger = ledger_pb2_grpc.LedgerServiceStub(self._ledger_ch)
        self._auth = keys_pb2_grpc.KeysServiceStub(auth_ch)
        self._reads = ledger_pb2_grpc.LedgerServiceStub(reads_ch)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def partner(self, ref: str, credits: int, name: str = "", tier: str = "growth") -> str:
        partner = self.keys.CreatePartner(
            keys_pb2.CreatePartnerRequest(name=name or f"Partner {ref}", tier=tier, external_ref=ref), timeout=TIMEOUT
        )
        if credits:
            self.ledger.Deposit(
                ledger_pb2.DepositRequest(
                    idempotency_id=f"seed-deposit:{partner.id}",
                    account=f"partner:{partner.id}",
                    amount_ucr=credits * UCR_PER_CREDIT,
                    memo="seed deposit",
                ),
                timeout=TIMEOUT,
            )
        return partner.id

    def funded_key(
        self, partner_id: str, budget_credits: int, models: list[str], name: str = "Demo key", **fields
    ) -> FundedKey:
        """A partner key with this budget (the partner pays budget + its tier's fee)."""
        created = self.keys.CreateKey(
            keys_pb2.CreateKeyRequest(
                actor=keys_pb2.Actor(partner_id=partner_id),
                idempotency_key=f"seed:{uuid.uuid4().hex}",
                fields=keys_pb2.KeyFields(name=name, allowed_models=models, **fields),
                budget_credits=budget_credits,
            ),
            timeout=TIMEOUT,
        )
        return FundedKey(partner_id, created.key.id, created.secret, created.key.budget_account, list(models))

    def customer(
        self, partner_id: str, name: str, ref: str, *, ai_credits: bool = True, menu: bool = True
    ) -> keys_pb2.Customer:
        """The partner's customer made with idempotency key ``ref`` (the same one again on a rerun)."""
        return self.keys.CreateCustomer(
            keys_pb2.CreateCustomerRequest(
                actor=keys_pb2.Actor(partner_id=partner_id),
                name=name,
                ai_credits_enabled=ai_credits,
                ai_gateway_menu_enabled=menu,
                idempotency_key=ref,
            ),
            timeout=TIMEOUT,
        )

    def self_service_on(self, partner_id: str) -> None:
        """Turns the partner's customer self-service on, keeping its other settings."""
        actor = keys_pb2.Actor(partner_id=partner_id)
        partner = self.keys.GetPartner(keys_pb2.GetPartnerRequest(actor=actor), timeout=TIMEOUT)
        if partner.self_service.enabled:
            return
        settings = keys_pb2.SelfServiceSettings()
        settings.CopyFrom(partner.self_service)
        settings.enabled = True
        self.keys.UpdateSelfService(keys_pb2.UpdateSelfServiceRequest(actor=actor, settings=settings), timeout=TIMEOUT)

    def balance(self, account: str) -> ledger_pb2.Balance:
        return self._reads.GetBalance(ledger_pb2.GetBalanceRequest(account=account), timeout=TIMEOUT)

    def balance_ucr(self, account: str) -> int:
        return self.balance(account).posted_ucr

    def key_works(self, secret: str) -> bool:
        try:
            resp = self._auth.AuthenticateKey(
                keys_pb2.AuthenticateKeyRequest(key_hash=hash_secret(secret)), timeout=TIMEOUT
            )
        except grpc.RpcError:
            return False
        return resp.key.status == keys_pb2.KEY_STATUS_ACTIVE


def ensure_demo(seeder: Seeder, var_dir: Path) -> FundedKey:
    """The demo partner (10,000 credits, growth tier) and its demo key (5,000 credits budget)."""
    state = var_dir / "demo-key.json"
    partner_id = seeder.partner("demo", credits=10_000, name="Demo Partner")
    if state.exists():
        saved = json.loads(state.read_text())
        if saved.get("partner_id") == partner_id and seeder.key_works(saved["secret"]):
            return FundedKey(**saved)
    key = seeder.funded_key(partner_id, 5_000, DEMO_MODELS)
    fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(key.__dict__, f)
    return key


@dataclass
class DemoUsers:
    partner_email: str
    partner_password: str
    customer_email: str
    customer_password: str
    customer_id: str


DEMO_PARTNER_EMAIL = "partner@demo.creditgate.local"
DEMO_CUSTOMER_EMAIL = "customer@demo.creditgate.local"


def _demo_passwords(var_dir: Path) -> dict[str, str]:
    """The demo users' passwords, made once per var/ (owner-only, like the admin's)."""
    path = var_dir / "demo-users.json"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"partner": secrets.token_urlsafe(12), "customer": secrets.token_urlsafe(12)}, f)
    data = json.loads(path.read_text())
    return {"partner": str(data["partner"]), "customer": str(data["customer"])}


def _has_user(client: BffClient, path: str, email: str) -> bool:
    cursor = None
    while True:
        page = client.ok("GET", path, params={"limit": 200, **({"cursor": cursor} if cursor else {})})
        if any(u["email"] == email for u in page["data"]):
            return True
        cursor = page["next_cursor"]
        if not cursor:
            return False


def ensure_demo_users(seeder: Seeder, var_dir: Path, bff_url: str, admin: dict[str, str], partner_id: str) -> DemoUsers:
    """The demo partner's owner and a user of its demo customer (AI credits and the AI
    Gateway menu on, the partner's self-service on: the customer sees AI Gateway)."""
    passwords = _demo_passwords(var_dir)
    customer = seeder.customer(partner_id, "Demo Customer", "demo-customer")
    seeder.self_service_on(partner_id)
    with BffClient(bff_url).sign_in(admin["email"], admin["password"]) as as_admin:
        if not _has_user(as_admin, f"/admin/partners/{partner_id}/users", DEMO_PARTNER_EMAIL):
            invite_and_accept(
                as_admin,
                f"/admin/partners/{partner_id}/invites",
                {"email": DEMO_PARTNER_EMAIL, "role": "owner"},
                passwords["partner"],
                "Demo Partner Owner",
            ).close()
    with BffClient(bff_url).sign_in(DEMO_PARTNER_EMAIL, passwords["partner"]) as owner:
        if not _has_user(owner, f"/partner/customers/{customer.id}/users", DEMO_CUSTOMER_EMAIL):
            invite_and_accept(
                owner,
                f"/partner/customers/{customer.id}/invites",
                {"email": DEMO_CUSTOMER_EMAIL},
                passwords["customer"],
                "Demo Customer User",
            ).close()
    with BffClient(bff_url).sign_in(DEMO_CUSTOMER_EMAIL, passwords["customer"]):
        pass  # the password printed is the one that works
    return DemoUsers(DEMO_PARTNER_EMAIL, passwords["partner"], DEMO_CUSTOMER_EMAIL, passwords["customer"], customer.id)

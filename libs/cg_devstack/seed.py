"""Demo data and small factories: a partner with credits and a funded virtual key.

Everything is idempotent: the partner by external reference, money moves by
idempotency id, and the demo key's secret is kept in ``var/demo-key.json`` (it is
shown once by the keys service, so this development-only file is how a second
``make run`` keeps the same working key).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc

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
    def __init__(self, keys_addr: str, ledger_addr: str) -> None:
        self._keys_ch = grpc.insecure_channel(keys_addr)
        self._ledger_ch = grpc.insecure_channel(ledger_addr)
        self.keys = keys_pb2_grpc.KeysServiceStub(self._keys_ch)
        self.ledger = ledger_pb2_grpc.LedgerServiceStub(self._ledger_ch)

    def close(self) -> None:
        self._keys_ch.close()
        self._ledger_ch.close()

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

    def balance_ucr(self, account: str) -> int:
        return self.ledger.GetBalance(ledger_pb2.GetBalanceRequest(account=account), timeout=TIMEOUT).posted_ucr

    def key_works(self, secret: str) -> bool:
        try:
            resp = self.keys.AuthenticateKey(
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

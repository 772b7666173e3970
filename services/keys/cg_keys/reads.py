"""Keys as they are read: by a tenant (with what a partner key has spent, from the
ledger, and the cheapest request it can make) and by the proxy's login (with the models
the key can call and the terms its requests are billed at)."""

from __future__ import annotations

from dataclasses import dataclass

from cg_keys import access, budget
from cg_keys.billing import LedgerTerms, ledger_terms
from cg_keys.catalog import Catalog, CatalogModel
from cg_keys.errors import InvalidArgument, NotFound
from cg_keys.funding import Funding
from cg_keys.models import Partner, VirtualKey
from cg_keys.repository import KeyRepository
from creditgate.keys.v1 import keys_pb2

KEY_HASH_LENGTH = 64  # hex SHA-256 (cglib.keysecret)


@dataclass(frozen=True)
class KeyRead:
    key: VirtualKey
    spend: budget.Spend | None  # a partner key's (budget.key_spend)
    min_request_ucr: int = 0


@dataclass(frozen=True)
class Authenticated:
    key: VirtualKey
    partner: Partner
    models: list[CatalogModel]  # what the key can call now, in the key's order
    billing: LedgerTerms


class KeyReads:
    def __init__(self, repo: KeyRepository, catalog: Catalog, funding: Funding) -> None:
        self.repo = repo
        self.catalog = catalog
        self.funding = funding

    async def get(self, actor: keys_pb2.Actor, key_id: str) -> tuple[KeyRead, Partner]:
        async with self.repo.session() as session:
            acting = await access.resolve(session, actor)
            key = access.visible_key(acting, await access.lookup(session, VirtualKey, key_id))
        # a customer-created key has no account of its own (it draws on its partner's)
        balance = await self.funding.balance(key.budget_account) if key.kind == "partner" else None
        need = budget.min_request_ucr(self.catalog, acting.partner.tier, key.allowed_models)
        return KeyRead(key, budget.key_spend(key, balance), need), acting.partner

    async def list(self, actor: keys_pb2.Actor, include_revoked: bool) -> tuple[list[KeyRead], Partner]:
        async with self.repo.session() as session:
            acting = await access.resolve(session, actor)
            customer_id = acting.customer.id if acting.customer is not None else None
            keys = await self.repo.listed(session, acting.partner.id, customer_id, include_revoked)
        balances = await self.funding.balances([k.budget_account for k in keys if k.kind == "partner"])
        return [KeyRead(k, budget.key_spend(k, balances.get(k.budget_account))) for k in keys], acting.partner

    async def authenticate(self, key_hash: str) -> Authenticated:
        if len(key_hash) != KEY_HASH_LENGTH:
            raise InvalidArgument("key_hash", f"expected {KEY_HASH_LENGTH} hex characters")
        found = await self.repo.by_hash(key_hash)
        if found is None:
            raise NotFound("key not found")
        key, partner = found
        models = self.catalog.usable(partner.tier, key.allowed_models)
        return Authenticated(key, partner, models, ledger_terms(key, partner))

"""gRPC servicer: translates proto <-> domain and maps failures to status codes."""

from __future__ import annotations

import logging

import grpc
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_keys import repository
from cg_keys.catalog import Catalog
from cg_keys.models import Partner, VirtualKey
from cglib.ids import new_id
from cglib.keysecret import display_prefix, hash_secret, new_secret
from creditgate.keys.v1 import keys_pb2, keys_pb2_grpc

log = logging.getLogger(__name__)

_STATUS = {
    "active": keys_pb2.KEY_STATUS_ACTIVE,
    "suspended": keys_pb2.KEY_STATUS_SUSPENDED,
    "exhausted": keys_pb2.KEY_STATUS_EXHAUSTED,
    "expired": keys_pb2.KEY_STATUS_EXPIRED,
    "revoked": keys_pb2.KEY_STATUS_REVOKED,
}
TIERS = ("starter", "growth", "enterprise")


def partner_account(partner_id: str) -> str:
    return f"partner:{partner_id}"


def key_account(key_id: str) -> str:
    return f"key:{key_id}"


def _partner_pb(p: Partner) -> keys_pb2.Partner:
    return keys_pb2.Partner(id=p.id, name=p.name, tier=p.tier, external_ref=p.external_ref or "")


def _key_pb(k: VirtualKey) -> keys_pb2.Key:
    return keys_pb2.Key(
        id=k.id,
        partner_id=k.partner_id,
        name=k.name,
        prefix=k.prefix,
        status=_STATUS[k.status],
        allowed_models=list(k.allowed_models),
        budget_account=k.budget_account,
        created_at_unix=k.created_at,
    )


class KeysServicer(keys_pb2_grpc.KeysServiceServicer):
    def __init__(self, sessions: async_sessionmaker[AsyncSession], catalog: Catalog) -> None:
        self.sessions = sessions
        self.catalog = catalog

    async def CreatePartner(self, request, context):  # noqa: N802 (gRPC names)
        name = request.name.strip()
        if not name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name: required")
        tier = request.tier or "starter"
        if tier not in TIERS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"tier: must be one of {', '.join(TIERS)}")
        async with self.sessions() as session:
            if request.external_ref:
                existing = await repository.partner_by_ref(session, request.external_ref)
                if existing:
                    return _partner_pb(existing)
            partner = Partner(id=new_id("ptn"), name=name, tier=tier, external_ref=request.external_ref or None)
            session.add(partner)
            try:
                await session.commit()
            except IntegrityError:  # a concurrent create with the same external_ref won
                await session.rollback()
                existing = await repository.partner_by_ref(session, request.external_ref)
                if existing is None:
                    raise
                return _partner_pb(existing)
            return _partner_pb(partner)

    async def GetPartner(self, request, context):  # noqa: N802
        async with self.sessions() as session:
            partner = await session.get(Partner, request.partner_id)
        if partner is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "partner not found")
        return _partner_pb(partner)

    async def CreateKey(self, request, context):  # noqa: N802
        name = request.name.strip()
        if not name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name: required")
        if not request.allowed_models:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "allowed_models: at least one model")
        unknown = [m for m in request.allowed_models if self.catalog.get(m) is None]
        if unknown:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"allowed_models: not in the catalog: {', '.join(unknown)}"
            )
        async with self.sessions() as session:
            partner = await session.get(Partner, request.partner_id)
            if partner is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, "partner not found")
            secret = new_secret()
            key_id = new_id("key")
            key = VirtualKey(
                id=key_id,
                partner_id=partner.id,
                name=name,
                key_hash=hash_secret(secret),
                prefix=display_prefix(secret),
                allowed_models=list(dict.fromkeys(request.allowed_models)),
                budget_account=key_account(key_id),
            )
            session.add(key)
            await session.commit()
            log.info("key created", extra={"key_id": key.id, "partner_id": partner.id, "prefix": key.prefix})
            return keys_pb2.CreateKeyResponse(key=_key_pb(key), secret=secret)

    async def GetKey(self, request, context):  # noqa: N802
        async with self.sessions() as session:
            key = await session.get(VirtualKey, request.key_id)
        if key is None or key.partner_id != request.partner_id:
            await context.abort(grpc.StatusCode.NOT_FOUND, "key not found")
        return _key_pb(key)

    async def AuthenticateKey(self, request, context):  # noqa: N802
        if len(request.key_hash) != 64:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "key_hash: expected 64 hex characters")
        async with self.sessions() as session:
            key = await repository.key_by_hash(session, request.key_hash)
        if key is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "key not found")
        routes = []
        for model_id in key.allowed_models:
            m = self.catalog.get(model_id)
            if m is None:  # removed from the catalog since the key was made
                continue
            routes.append(
                keys_pb2.ModelRoute(
                    id=m.id,
                    provider=m.provider,
                    upstream_model=m.upstream_model,
                    category=m.category,
                    input_usd_per_mtok=str(m.input_usd_per_mtok),
                    output_usd_per_mtok=str(m.output_usd_per_mtok),
                    context_window=m.context_window,
                    max_output_tokens=m.max_output_tokens,
                    price_book_version=self.catalog.version,
                )
            )
        return keys_pb2.AuthenticateKeyResponse(key=_key_pb(key), models=routes)

"""Queries of the keys database. Functions take an open session; the caller commits."""

from __future__ import annotations

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_keys.models import Partner, VirtualKey


async def partner_by_ref(session: AsyncSession, external_ref: str) -> Partner | None:
    result = await session.exec(select(Partner).where(Partner.external_ref == external_ref))
    return result.first()


async def key_by_hash(session: AsyncSession, key_hash: str) -> VirtualKey | None:
    result = await session.exec(select(VirtualKey).where(VirtualKey.key_hash == key_hash))
    return result.first()

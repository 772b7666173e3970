"""Management API tokens: a partner's automation signs in with ``Authorization: Bearer
cgm_...``.

A token is made by a partner's owner or admin (signed in: tokens never make tokens),
with the scope ``read`` or ``write``; its secret is answered once and kept as SHA-256.
Every request looks the token up in the database (no cache), so a revoked token is
refused by the next request. ``last_used_at`` moves at most once a minute, so a busy
script costs a write a minute, not one per call.
"""

from __future__ import annotations

from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_bff import errors
from cg_bff.auth.credentials import API_TOKEN_DISPLAY_CHARS, digest, looks_like_api_token, new_api_token, now_ms
from cg_bff.auth.paging import after_cursor, page_after
from cg_bff.models.identity import ApiToken
from cglib.db import READ
from cglib.ids import new_id

TOUCH_INTERVAL_MS = 60_000
MAX_ACTIVE_PER_PARTNER = 100


class ApiTokens:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def create(self, partner_id: str, name: str, scope: str, created_by: str) -> tuple[ApiToken, str]:
        secret = new_api_token()
        token = ApiToken(
            id=new_id("mtk"),
            partner_id=partner_id,
            name=name,
            scope=scope,
            token_hash=digest(secret),
            prefix=secret[:API_TOKEN_DISPLAY_CHARS],
            created_by=created_by,
            created_at_ms=now_ms(),
        )
        async with self.sessions() as session:
            active = (
                await session.exec(
                    select(func.count())
                    .select_from(ApiToken)
                    .where(col(ApiToken.partner_id) == partner_id, col(ApiToken.revoked_at_ms).is_(None))
                )
            ).one()
            if active >= MAX_ACTIVE_PER_PARTNER:
                raise errors.conflict(
                    f"A partner has at most {MAX_ACTIVE_PER_PARTNER} active tokens: revoke one first."
                )
            session.add(token)
            await session.commit()
        return token, secret

    async def page(
        self, partner_id: str, *, include_revoked: bool, cursor: str | None, limit: int
    ) -> tuple[list[ApiToken], str | None]:
        query = select(ApiToken).where(ApiToken.partner_id == partner_id, after_cursor(ApiToken, cursor))
        if not include_revoked:
            query = query.where(col(ApiToken.revoked_at_ms).is_(None))
        async with self.sessions() as session:
            await session.connection(execution_options=READ)
            rows = list(
                (
                    await session.exec(query.order_by(col(ApiToken.created_at_ms), col(ApiToken.id)).limit(limit + 1))
                ).all()
            )
        return rows[:limit], page_after(rows, limit)

    async def get(self, partner_id: str, token_id: str) -> ApiToken:
        async with self.sessions() as session:
            await session.connection(execution_options=READ)
            token = await session.get(ApiToken, token_id)
        if token is None or token.partner_id != partner_id:
            raise errors.not_found("token")
        return token

    async def revoke(self, partner_id: str, token_id: str) -> ApiToken:
        """Revokes the partner's token (again: nothing changes); another's is a 404."""
        async with self.sessions() as session:
            token = await session.get(ApiToken, token_id, with_for_update=True)
            if token is None or token.partner_id != partner_id:
                raise errors.not_found("token")
            if token.revoked_at_ms is None:
                token.revoked_at_ms = now_ms()
                session.add(token)
                await session.commit()
                await session.refresh(token)
            return token

    async def authenticate(self, secret: str) -> ApiToken | None:
        """The live token with this secret (None: unknown or revoked)."""
        if not looks_like_api_token(secret):
            return None
        async with self.sessions() as session:
            await session.connection(execution_options=READ)
            token = (await session.exec(select(ApiToken).where(ApiToken.token_hash == digest(secret)))).first()
        if token is None or token.revoked_at_ms is not None:
            return None
        now = now_ms()
        if token.last_used_at_ms is None or now - token.last_used_at_ms >= TOUCH_INTERVAL_MS:
            async with self.sessions() as session:
                await session.exec(
                    update(ApiToken)
                    .where(
                        col(ApiToken.id) == token.id,
                        col(ApiToken.last_used_at_ms).is_(None)
                        | (col(ApiToken.last_used_at_ms) <= now - TOUCH_INTERVAL_MS),
                    )
                    .values(last_used_at_ms=now)
                )
                await session.commit()
            token.last_used_at_ms = now
        return token

"""Identity: users, passwords, sessions, CSRF, management API tokens, invites, throttling.

(Skeleton: ``SessionAuth`` authenticates nobody yet; the identity work fills it in.)
"""

from __future__ import annotations

from fastapi import Request
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_bff.principal import Principal
from cg_bff.settings import Settings


class SessionAuth:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    async def authenticate(self, request: Request) -> Principal | None:
        return None

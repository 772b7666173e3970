"""Browser sessions, kept server-side in ``user_sessions``, and their cookie.

The cookie ``cg_session`` holds a random secret; the table holds its SHA-256. A session
ends when its row goes (sign-out, a password change for the other sessions, the user
removed), after ``session_idle_s`` without a request, or ``session_max_age_s`` after
sign-in, whichever comes first. ``last_seen_at_ms`` moves forward at most every
``touch_interval_ms`` (a fraction of the idle time), so most requests only read.

The cookie is HttpOnly (no script reads it), SameSite=Lax (other sites' forms and
scripts do not send it on a POST), Path=/ and Secure when the BFF is served over TLS
(``settings.cookie_secure``, or else the request's own scheme, which uvicorn takes from
``X-Forwarded-Proto`` behind a trusted proxy).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request, Response
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_bff.auth.credentials import SESSION_COOKIE, digest, new_session_secret, now_ms
from cg_bff.models.identity import User, UserSession
from cg_bff.settings import Settings
from cglib.db import READ


@dataclass(frozen=True)
class Live:
    """A session that is valid now, with its user."""

    session: UserSession
    user: User


class SessionStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self.sessions = sessions
        self.idle_ms = settings.session_idle_s * 1000
        self.max_age_ms = settings.session_max_age_s * 1000
        self.touch_interval_ms = min(60_000, self.idle_ms // 10)

    async def create(self, user: User, address: str, user_agent: str) -> tuple[str, UserSession]:
        """A new session for ``user``: (the cookie's secret, the row). Also sweeps the
        sessions that have ended by time."""
        secret, now = new_session_secret(), now_ms()
        row = UserSession(
            id=digest(secret),
            user_id=user.id,
            created_at_ms=now,
            last_seen_at_ms=now,
            expires_at_ms=now + self.max_age_ms,
            address=address[:64],
            user_agent=user_agent[:200],
        )
        async with self.sessions() as session:
            await session.exec(
                delete(UserSession).where(
                    (col(UserSession.expires_at_ms) <= now) | (col(UserSession.last_seen_at_ms) <= now - self.idle_ms)
                )
            )
            session.add(row)
            await session.commit()
        return secret, row

    async def live(self, secret: str) -> Live | None:
        """The session whose cookie holds ``secret``, if it is valid now (its user's row
        read afresh: a role changed a moment ago applies to the next request)."""
        now = now_ms()
        async with self.sessions() as session:
            await session.connection(execution_options=READ)  # SQLite: a read takes no write lock
            found = (
                await session.exec(
                    select(UserSession, User)
                    .join(User, col(User.id) == col(UserSession.user_id))
                    .where(UserSession.id == digest(secret))
                )
            ).first()
        if found is None:
            return None
        row, user = found
        if row.expires_at_ms <= now or row.last_seen_at_ms <= now - self.idle_ms:
            return None
        if now - row.last_seen_at_ms >= self.touch_interval_ms:
            async with self.sessions() as session:
                await session.exec(
                    update(UserSession)
                    .where(col(UserSession.id) == row.id, col(UserSession.last_seen_at_ms) < now)
                    .values(last_seen_at_ms=now)
                )
                await session.commit()
            row.last_seen_at_ms = now
        return Live(row, user)

    def idle_expires_at_ms(self, row: UserSession) -> int:
        return min(row.expires_at_ms, row.last_seen_at_ms + self.idle_ms)

    async def end(self, session_id: str) -> None:
        async with self.sessions() as session:
            await session.exec(delete(UserSession).where(col(UserSession.id) == session_id))
            await session.commit()

    async def end_all(self, user_id: str, *, keep: str | None = None) -> int:
        """Ends every session of ``user_id`` but ``keep``; how many ended."""
        async with self.sessions() as session:
            where = col(UserSession.user_id) == user_id
            if keep is not None:
                where = where & (col(UserSession.id) != keep)
            result = await session.exec(delete(UserSession).where(where))
            await session.commit()
            return int(getattr(result, "rowcount", 0) or 0)


def cookie_secure(request: Request, settings: Settings) -> bool:
    if settings.cookie_secure is not None:
        return settings.cookie_secure
    return request.url.scheme == "https"


def set_session_cookie(response: Response, request: Request, settings: Settings, secret: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=settings.session_max_age_s,
        path="/",
        httponly=True,
        samesite="lax",
        secure=cookie_secure(request, settings),
    )


def clear_session_cookie(response: Response, request: Request, settings: Settings) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=cookie_secure(request, settings)
    )


def clearing_cookie_header(request: Request, settings: Settings) -> str:
    """A ``Set-Cookie`` value that removes the session cookie (sent with a 401 for a
    session that has ended, so the browser stops presenting it)."""
    response = Response()
    clear_session_cookie(response, request, settings)
    return response.headers["set-cookie"]

"""Users: finding them, the bootstrap admin, passwords, and a partner's team (roles).

The rules of a partner's team, checked here and nowhere else:

- owners and admins manage the team; viewers only read;
- only an owner may make an owner, or change or remove one (an admin may not);
- a partner always keeps an owner: the last one can be neither demoted nor removed.
  A change to a team locks the whole team's rows first, in id order (PostgreSQL ``FOR
  UPDATE``; SQLite transactions of ours hold the write lock), so two owners demoting each
  other at the same moment cannot both succeed, nor deadlock.
"""

from __future__ import annotations

import logging
import re

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_bff import errors
from cg_bff.auth.credentials import now_ms
from cg_bff.auth.paging import after_cursor, page_after
from cg_bff.models.identity import User, UserSession
from cg_bff.principal import Principal
from cglib.db import READ
from cglib.ids import new_id

log = logging.getLogger(__name__)

ROLES = ("owner", "admin", "viewer")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
MAX_EMAIL = 254


def normalize_email(email: str) -> str:
    return email.strip().lower()


def valid_email(email: str, field: str = "email") -> str:
    """The email lower-cased, or a 400 naming ``field``."""
    email = normalize_email(email)
    if len(email) > MAX_EMAIL or not _EMAIL.match(email) or not email.isprintable():
        raise errors.invalid("The email address is not valid.", {field: "an email address"})
    return email


def _require_owner_for(acting: User, *roles: str | None) -> None:
    if acting.role != "owner" and "owner" in roles:
        raise errors.forbidden("Only an owner may make, change or remove an owner.")


class Accounts:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def by_email(self, email: str) -> User | None:
        async with self.sessions() as session:
            await session.connection(execution_options=READ)
            return (await session.exec(select(User).where(User.email == normalize_email(email)))).first()

    async def get(self, user_id: str) -> User | None:
        async with self.sessions() as session:
            await session.connection(execution_options=READ)
            return await session.get(User, user_id)

    async def ensure_admin(self, email: str, password_hash: str) -> bool:
        """Creates the platform admin ``email`` unless a user with that email exists (a
        replica starting at the same time may win: that is fine). True if it made one."""
        email = normalize_email(email)
        existing = await self.by_email(email)
        if existing is not None:
            if existing.kind != "admin":
                log.warning("bootstrap admin email belongs to a non-admin user; not made an admin")
            return False
        now = now_ms()
        user = User(
            id=new_id("usr"),
            email=email,
            name="Platform admin",
            password_hash=password_hash,
            kind="admin",
            created_at_ms=now,
            password_changed_at_ms=now,
        )
        async with self.sessions() as session:
            session.add(user)
            try:
                await session.commit()
            except IntegrityError:  # another replica made it first
                return False
        log.info("bootstrap platform admin created", extra={"email": email})
        return True

    async def set_password_hash(self, user_id: str, password_hash: str, *, changed: bool) -> None:
        async with self.sessions() as session:
            user = await session.get(User, user_id)
            if user is None:
                raise errors.unauthenticated()
            user.password_hash = password_hash
            if changed:
                user.password_changed_at_ms = now_ms()
            session.add(user)
            await session.commit()

    # -- a partner's team, and a customer's users ---------------------------------------

    async def page(
        self, partner_id: str, *, customer_id: str | None, cursor: str | None, limit: int
    ) -> tuple[list[User], str | None]:
        """A partner's users (``customer_id`` None) or one customer's users, oldest first."""
        kind = "customer" if customer_id is not None else "partner"
        query = select(User).where(User.partner_id == partner_id, User.kind == kind, after_cursor(User, cursor))
        if customer_id is not None:
            query = query.where(User.customer_id == customer_id)
        async with self.sessions() as session:
            await session.connection(execution_options=READ)
            rows = list(
                (await session.exec(query.order_by(col(User.created_at_ms), col(User.id)).limit(limit + 1))).all()
            )
        return rows[:limit], page_after(rows, limit)

    async def change_role(self, actor: Principal, user_id: str, role: str) -> User:
        async with self.sessions() as session:
            team = await self._locked_team(session, actor.partner_id or "")
            user = _member(team, user_id)
            _require_owner_for(_acting(team, actor), user.role, role)
            if user.role == "owner" and role != "owner":
                _keep_an_owner(team, user)
            user.role = role
            session.add(user)
            await session.commit()
            await session.refresh(user)
            return user

    async def remove(self, actor: Principal, user_id: str, customer_id: str | None = None) -> None:
        """Removes a partner's user (or, with ``customer_id``, a user of that customer);
        the user's sessions end with it."""
        async with self.sessions() as session:
            if customer_id is None:
                team = await self._locked_team(session, actor.partner_id or "")
                user = _member(team, user_id)
                _require_owner_for(_acting(team, actor), user.role)
                if user.role == "owner":
                    _keep_an_owner(team, user)
            else:
                found = await session.get(User, user_id, with_for_update=True)
                if found is None or found.kind != "customer" or found.partner_id != actor.partner_id:
                    raise errors.not_found("user")
                if found.customer_id != customer_id:
                    raise errors.not_found("user")
                user = found
            await session.exec(delete(UserSession).where(col(UserSession.user_id) == user.id))
            await session.delete(user)
            await session.commit()

    @staticmethod
    async def _locked_team(session: AsyncSession, partner_id: str) -> list[User]:
        """Every user of the partner's team, their rows locked in id order (PostgreSQL; on
        SQLite our transactions hold the write lock): changes to one team run one at a
        time and always take their locks in the same order, so they never deadlock."""
        query = (
            select(User)
            .where(User.partner_id == partner_id, User.kind == "partner")
            .order_by(col(User.id))
            .with_for_update()
        )
        return list((await session.exec(query)).all())


def _member(team: list[User], user_id: str) -> User:
    """The team's user, else 404 (another partner's user looks exactly like none)."""
    user = next((u for u in team if u.id == user_id), None)
    if user is None:
        raise errors.not_found("user")
    return user


def _keep_an_owner(team: list[User], leaving: User) -> None:
    if not [u for u in team if u.role == "owner" and u.id != leaving.id]:
        raise errors.ApiError(409, "last_owner", "A partner keeps at least one owner: make someone else owner first.")


def _acting(team: list[User], actor: Principal) -> User:
    """The acting user as the locked team has them now: a role changed since the request
    was authenticated counts."""
    acting = next((u for u in team if u.id == actor.user_id), None)
    if acting is None or acting.role not in ("owner", "admin"):
        raise errors.forbidden("Read-only: this needs an owner or admin.")
    return acting

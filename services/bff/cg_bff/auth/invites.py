"""Invites: single-use, expiring links that make a partner's user or a customer's user.

The platform has no mailer: the API answers the invite's token (and the link built from
``settings.public_url``) once, to the inviter, who passes it on; only its SHA-256 is kept.
Accepting it sets the new user's password and signs them in. An invite is single-use
(accepting marks it under a row lock, in the transaction that creates the user), ends
after ``settings.invite_ttl_s``, and can be revoked; a newer invite for the same email
and partner replaces a pending one.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_bff import errors
from cg_bff.auth.accounts import valid_email
from cg_bff.auth.credentials import digest, new_invite_token, now_ms
from cg_bff.auth.paging import after_cursor, page_after
from cg_bff.models.identity import Invite, User
from cg_bff.settings import Settings
from cglib.db import READ
from cglib.ids import new_id

Status = Literal["pending", "accepted", "expired", "revoked"]


def status(invite: Invite, now: int | None = None) -> Status:
    if invite.accepted_at_ms is not None:
        return "accepted"
    if invite.revoked_at_ms is not None:
        return "revoked"
    if invite.expires_at_ms <= (now if now is not None else now_ms()):
        return "expired"
    return "pending"


def _unusable(invite: Invite) -> errors.ApiError | None:
    state = status(invite)
    if state == "pending":
        return None
    words = {"accepted": "has been used", "expired": "has expired", "revoked": "was revoked"}
    return errors.ApiError(409, f"invite_{state}", f"This invite {words[state]}; ask for a new one.")


class Invites:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self.sessions = sessions
        self.ttl_ms = settings.invite_ttl_s * 1000
        self.public_url = settings.public_url.rstrip("/")

    def link(self, token: str) -> str:
        """Where the invitee goes: the portal reads the token from the fragment (which a
        browser never sends to a server, so it stays out of logs and Referer headers)."""
        return f"{self.public_url}/invite#{token}"

    async def create(
        self,
        *,
        kind: Literal["partner", "customer"],
        partner_id: str,
        email: str,
        invited_by: str,
        role: str | None = None,
        customer_id: str | None = None,
    ) -> tuple[Invite, str]:
        """A new pending invite and its token (shown once). 409 when the email already
        has an account (emails are unique across the platform)."""
        email = valid_email(email)
        token, now = new_invite_token(), now_ms()
        invite = Invite(
            id=new_id("inv"),
            token_hash=digest(token),
            kind=kind,
            partner_id=partner_id,
            customer_id=customer_id,
            role=role,
            email=email,
            invited_by=invited_by,
            created_at_ms=now,
            expires_at_ms=now + self.ttl_ms,
        )
        async with self.sessions() as session:
            if (await session.exec(select(User.id).where(User.email == email))).first() is not None:
                raise errors.ApiError(409, "email_taken", "A user with this email exists already.", {"email": "taken"})
            await session.exec(
                update(Invite)
                .where(
                    col(Invite.partner_id) == partner_id,
                    col(Invite.email) == email,
                    col(Invite.accepted_at_ms).is_(None),
                    col(Invite.revoked_at_ms).is_(None),
                )
                .values(revoked_at_ms=now)
            )
            session.add(invite)
            await session.commit()
        return invite, token

    async def by_token(self, token: str) -> Invite:
        """The pending invite of this token: 404 for none, 409 for a used, expired or
        revoked one."""
        async with self.sessions() as session:
            await session.connection(execution_options=READ)
            invite = (await session.exec(select(Invite).where(Invite.token_hash == digest(token)))).first()
        if invite is None:
            raise errors.not_found("invite")
        if (refusal := _unusable(invite)) is not None:
            raise refusal
        return invite

    async def accept(self, token: str, name: str, password_hash: str) -> User:
        """Makes the invite's user, with this password hash; the invite is used up."""
        now = now_ms()
        async with self.sessions() as session:
            invite = (
                await session.exec(select(Invite).where(Invite.token_hash == digest(token)).with_for_update())
            ).first()
            if invite is None:
                raise errors.not_found("invite")
            if (refusal := _unusable(invite)) is not None:
                raise refusal
            user = User(
                id=new_id("usr"),
                email=invite.email,
                name=name,
                password_hash=password_hash,
                kind=invite.kind,
                partner_id=invite.partner_id,
                customer_id=invite.customer_id,
                role=invite.role,
                created_at_ms=now,
                password_changed_at_ms=now,
            )
            invite.accepted_at_ms, invite.user_id = now, user.id
            session.add_all([user, invite])
            try:
                await session.commit()
            except IntegrityError:
                raise errors.ApiError(
                    409, "email_taken", "A user with this email exists already.", {"email": "taken"}
                ) from None
            return user

    async def pending(
        self, partner_id: str, *, cursor: str | None, limit: int, customer_id: str | None = None
    ) -> tuple[list[Invite], str | None]:
        """The partner's invites that can still be accepted, oldest first."""
        now = now_ms()
        query = select(Invite).where(
            Invite.partner_id == partner_id,
            col(Invite.accepted_at_ms).is_(None),
            col(Invite.revoked_at_ms).is_(None),
            col(Invite.expires_at_ms) > now,
            after_cursor(Invite, cursor),
        )
        if customer_id is not None:
            query = query.where(Invite.customer_id == customer_id)
        async with self.sessions() as session:
            await session.connection(execution_options=READ)
            rows = list(
                (await session.exec(query.order_by(col(Invite.created_at_ms), col(Invite.id)).limit(limit + 1))).all()
            )
        return rows[:limit], page_after(rows, limit)

    async def revoke(self, partner_id: str, invite_id: str, *, by_owner: bool) -> Invite:
        """Revokes the partner's pending invite (an owner's invite only by an owner)."""
        async with self.sessions() as session:
            invite = await session.get(Invite, invite_id, with_for_update=True)
            if invite is None or invite.partner_id != partner_id:
                raise errors.not_found("invite")
            if invite.role == "owner" and not by_owner:
                raise errors.forbidden("Only an owner may revoke an owner's invite.")
            if status(invite) == "pending":
                invite.revoked_at_ms = now_ms()
                session.add(invite)
                await session.commit()
                await session.refresh(invite)
            return invite

"""The identity API's request and answer bodies (``XCreate`` / ``XUpdate`` / ``XPublic``).

Times are RFC 3339 date-times in UTC; ids are opaque strings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from cg_bff.auth import invites
from cg_bff.models.identity import ApiToken, Invite, User
from cg_bff.principal import Principal

RoleName = Literal["owner", "admin", "viewer"]
ScopeName = Literal["read", "write"]


def _printable(value: str) -> str:
    """Names and emails are text people read: no control characters (a NUL byte is not
    even storable in PostgreSQL)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("no control characters")
    return value


Text = Annotated[str, AfterValidator(_printable)]
Email = Field(min_length=3, max_length=254, examples=["ada@example.com"])
Password = Field(min_length=1, max_length=1024)
Name = Field(default="", max_length=200)


def _at(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class UserPublic(BaseModel):
    id: str
    email: str
    name: str
    kind: Literal["admin", "partner", "customer"]
    role: RoleName | None = None
    partner_id: str | None = None
    customer_id: str | None = None
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserPublic:
        return cls(
            id=user.id,
            email=user.email,
            name=user.name,
            kind=user.kind,  # type: ignore[arg-type]  # the column holds one of the three
            role=user.role,  # type: ignore[arg-type]
            partner_id=user.partner_id,
            customer_id=user.customer_id,
            created_at=at(user.created_at_ms),
        )


class PrincipalPublic(BaseModel):
    """Who the API sees: a user's session, or a partner's API token."""

    kind: Literal["admin", "partner", "customer"]
    via: Literal["session", "token"]
    user_id: str | None = None
    email: str | None = None
    partner_id: str | None = None
    customer_id: str | None = None
    role: RoleName | None = None
    scope: ScopeName | None = None
    token_id: str | None = None
    can_write: bool

    @classmethod
    def of(cls, p: Principal) -> PrincipalPublic:
        return cls(
            kind=p.kind,
            via=p.via,
            user_id=p.user_id,
            email=p.email,
            partner_id=p.partner_id,
            customer_id=p.customer_id,
            role=p.role,
            scope=p.scope,
            token_id=p.token_id,
            can_write=p.can_write,
        )


class SignIn(BaseModel):
    email: Text = Email
    password: str = Password


class SignedIn(BaseModel):
    """The session cookie is set; state-changing requests send ``csrf_token`` in
    ``X-CSRF-Token``."""

    user: UserPublic
    csrf_token: str


class SessionPublic(BaseModel):
    user: UserPublic | None = None  # None for an API token
    principal: PrincipalPublic
    csrf_token: str | None = None  # the session's; None for an API token
    expires_at: datetime | None = None  # when the session ends at the latest
    idle_expires_at: datetime | None = None  # when it ends without another request


class PasswordChange(BaseModel):
    current_password: str = Password
    new_password: str = Password


class InviteAccept(BaseModel):
    password: str = Password
    name: Text = Name


class InvitePublic(BaseModel):
    id: str
    kind: Literal["partner", "customer"]
    email: str
    role: RoleName | None = None
    partner_id: str
    customer_id: str | None = None
    invited_by: str
    status: invites.Status
    created_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, invite: Invite) -> InvitePublic:
        return cls(
            id=invite.id,
            kind=invite.kind,  # type: ignore[arg-type]
            email=invite.email,
            role=invite.role,  # type: ignore[arg-type]
            partner_id=invite.partner_id,
            customer_id=invite.customer_id,
            invited_by=invite.invited_by,
            status=invites.status(invite),
            created_at=at(invite.created_at_ms),
            expires_at=at(invite.expires_at_ms),
        )


class InviteCreated(BaseModel):
    """``token`` and ``url`` are shown this once: pass the link to the invitee."""

    invite: InvitePublic
    token: str
    url: str


class InviteLookup(BaseModel):
    """What an invite link offers, for the page that accepts it."""

    kind: Literal["partner", "customer"]
    email: str
    role: RoleName | None = None
    partner_name: str = ""
    customer_name: str = ""
    expires_at: datetime


class PartnerUserInvite(BaseModel):
    email: Text = Email
    role: RoleName = "viewer"


class AdminPartnerInvite(BaseModel):
    email: Text = Email
    role: RoleName = "owner"


class CustomerUserInvite(BaseModel):
    email: Text = Email


class PartnerUserUpdate(BaseModel):
    role: RoleName


class TokenCreate(BaseModel):
    name: Text = Field(min_length=1, max_length=200)
    scope: ScopeName = "read"


class TokenPublic(BaseModel):
    id: str
    name: str
    scope: ScopeName
    prefix: str
    created_by: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @classmethod
    def of(cls, token: ApiToken) -> TokenPublic:
        return cls(
            id=token.id,
            name=token.name,
            scope=token.scope,  # type: ignore[arg-type]
            prefix=token.prefix,
            created_by=token.created_by,
            created_at=at(token.created_at_ms),
            last_used_at=_at(token.last_used_at_ms),
            revoked_at=_at(token.revoked_at_ms),
        )


class TokenCreated(BaseModel):
    """``secret`` is shown this once (send it as ``Authorization: Bearer <secret>``)."""

    token: TokenPublic
    secret: str

"""Who is calling, and what they may do: the one place every route asks.

A request is authenticated (``Authenticator``, in ``auth``) either by a browser session
(the ``cg_session`` cookie; a state-changing request must also carry the session's CSRF
token in ``X-CSRF-Token``) or by a management API token (``Authorization: Bearer cgm_...``,
no CSRF). Either way the route sees a ``Principal``, through one of the dependencies
below; none of them takes a tenant id from the request: a partner's routes act on the
principal's own partner, and objects named in a path (a key, a customer) are looked up
*as that partner* (keys answers NOT_FOUND for anyone else's, and so does the BFF's own
data), so another tenant's id is a 404 that does not reveal the object exists.

| dependency | who passes | otherwise |
|---|---|---|
| ``Authenticated`` | anyone signed in or with a valid token | 401 |
| ``PlatformAdmin`` | a platform admin (session) | 403 |
| ``PartnerReader`` | a partner's user (any role) or token (any scope) | 403 |
| ``PartnerWriter`` | owner/admin user, or a read-write token | 403 |
| ``PartnerManager`` | owner/admin *user* (tokens and users are managed by people) | 403 |
| ``CustomerUser`` | a customer's user | 403 |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Protocol

from fastapi import Depends, Request

from cg_bff import errors
from creditgate.keys.v1 import keys_pb2

Kind = Literal["admin", "partner", "customer"]
Role = Literal["owner", "admin", "viewer"]
Scope = Literal["read", "write"]


@dataclass(frozen=True)
class Principal:
    kind: Kind
    via: Literal["session", "token"]
    user_id: str | None = None  # None when authenticated by an API token
    email: str | None = None
    partner_id: str | None = None  # partner and customer principals
    customer_id: str | None = None  # customer principals
    role: Role | None = None  # partner users
    scope: Scope | None = None  # API tokens
    session_id: str | None = None
    token_id: str | None = None

    @property
    def can_write(self) -> bool:
        """A partner principal that may change things: an owner or admin user, or a
        read-write token."""
        if self.kind != "partner":
            return False
        if self.via == "token":
            return self.scope == "write"
        return self.role in ("owner", "admin")

    def actor(self) -> keys_pb2.Actor:
        """The keys service's ``Actor`` for this principal (partner, or customer of a partner)."""
        return keys_pb2.Actor(partner_id=self.partner_id or "", customer_id=self.customer_id or "")


class Authenticator(Protocol):
    async def authenticate(self, request: Request) -> Principal | None:
        """The request's principal, or None when it carries no credentials at all.
        Raises ``ApiError`` for credentials that are present but bad (an expired or
        revoked session or token: 401; a missing or wrong CSRF token: 403)."""
        ...


async def _authenticated(request: Request) -> Principal:
    auth: Authenticator = request.app.state.bff.auth
    principal = await auth.authenticate(request)
    if principal is None:
        raise errors.unauthenticated()
    return principal


async def _admin(principal: Annotated[Principal, Depends(_authenticated)]) -> Principal:
    if principal.kind != "admin":
        raise errors.forbidden("Only a platform admin may do this.")
    return principal


async def _partner_reader(principal: Annotated[Principal, Depends(_authenticated)]) -> Principal:
    if principal.kind != "partner":
        raise errors.forbidden("This is a partner's route.")
    return principal


async def _partner_writer(principal: Annotated[Principal, Depends(_partner_reader)]) -> Principal:
    if not principal.can_write:
        raise errors.forbidden("Read-only: this needs an owner or admin, or a read-write token.")
    return principal


async def _partner_manager(principal: Annotated[Principal, Depends(_partner_writer)]) -> Principal:
    if principal.via != "session":
        raise errors.forbidden("Users and API tokens are managed by people, signed in.")
    return principal


async def _customer(principal: Annotated[Principal, Depends(_authenticated)]) -> Principal:
    if principal.kind != "customer":
        raise errors.forbidden("This is a customer's route.")
    return principal


Authenticated = Annotated[Principal, Depends(_authenticated)]
PlatformAdmin = Annotated[Principal, Depends(_admin)]
PartnerReader = Annotated[Principal, Depends(_partner_reader)]
PartnerWriter = Annotated[Principal, Depends(_partner_writer)]
PartnerManager = Annotated[Principal, Depends(_partner_manager)]
CustomerUser = Annotated[Principal, Depends(_customer)]

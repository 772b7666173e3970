"""People: a partner's team (invite, list, change role, remove), its customers' users,
and the platform admin's invite of a partner's first owner.

Who may: listing needs a partner's *user* (any role; API tokens manage no people);
inviting, changing and removing need an owner or admin (``PartnerManager``); only an
owner makes, changes or removes an owner, and the last owner stays (``auth.accounts``).
A user, invite or customer of another partner is a 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from cg_bff import errors
from cg_bff.auth import ID_PATTERN, identity, keys_call
from cg_bff.auth.schemas import (
    AdminPartnerInvite,
    CustomerUserInvite,
    InviteCreated,
    InvitePublic,
    PartnerUserInvite,
    PartnerUserUpdate,
    UserPublic,
)
from cg_bff.models.identity import Invite
from cg_bff.principal import PartnerManager, PartnerReader, PlatformAdmin, Principal
from cg_bff.requests import Cursor, Limit, Page
from creditgate.keys.v1 import keys_pb2

router = APIRouter(tags=["users"])

Id = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]


def _person(principal: Principal) -> Principal:
    if principal.via != "session":
        raise errors.forbidden("Users are managed by people, signed in: an API token may not.")
    return principal


async def _customer_of(request: Request, principal: Principal, customer_id: str) -> keys_pb2.Customer:
    """The partner's customer (keys answers NOT_FOUND for anyone else's: a 404 here)."""
    state, keys = keys_call(request)
    return await state.backends.call(
        keys.GetCustomer, keys_pb2.GetCustomerRequest(actor=principal.actor(), customer_id=customer_id), what="customer"
    )


def _created(request: Request, invite: Invite, token: str) -> InviteCreated:
    return InviteCreated(invite=InvitePublic.of(invite), token=token, url=identity(request).invites.link(token))


# -- a partner's team -----------------------------------------------------------------------


@router.get("/partner/users", response_model=Page[UserPublic])
async def list_partner_users(
    principal: PartnerReader, request: Request, cursor: Cursor = None, limit: Limit = 50
) -> Page[UserPublic]:
    """The partner's users, oldest first."""
    _person(principal)
    users, after = await identity(request).accounts.page(
        principal.partner_id or "", customer_id=None, cursor=cursor, limit=limit
    )
    return Page(data=[UserPublic.of(u) for u in users], next_cursor=after)


@router.post("/partner/users", response_model=InviteCreated, status_code=201)
async def invite_partner_user(body: PartnerUserInvite, principal: PartnerManager, request: Request) -> InviteCreated:
    """Invites someone to the partner's team with a role (only an owner invites an
    owner). The answer holds the invite link, shown once."""
    if body.role == "owner" and principal.role != "owner":
        raise errors.forbidden("Only an owner may make an owner.")
    invite, token = await identity(request).invites.create(
        kind="partner",
        partner_id=principal.partner_id or "",
        email=body.email,
        role=body.role,
        invited_by=principal.email or "",
    )
    return _created(request, invite, token)


@router.patch("/partner/users/{user_id}", response_model=UserPublic)
async def update_partner_user(
    user_id: Id, body: PartnerUserUpdate, principal: PartnerManager, request: Request
) -> UserPublic:
    """Changes a team member's role (at once: their next request has the new role)."""
    return UserPublic.of(await identity(request).accounts.change_role(principal, user_id, body.role))


@router.delete("/partner/users/{user_id}", status_code=204)
async def remove_partner_user(user_id: Id, principal: PartnerManager, request: Request) -> Response:
    """Removes a team member; their sessions end at once."""
    await identity(request).accounts.remove(principal, user_id)
    return Response(status_code=204)


@router.get("/partner/invites", response_model=Page[InvitePublic])
async def list_invites(
    principal: PartnerManager, request: Request, cursor: Cursor = None, limit: Limit = 50
) -> Page[InvitePublic]:
    """The partner's invites (team and customers') that can still be accepted."""
    invites, after = await identity(request).invites.pending(principal.partner_id or "", cursor=cursor, limit=limit)
    return Page(data=[InvitePublic.of(i) for i in invites], next_cursor=after)


@router.delete("/partner/invites/{invite_id}", response_model=InvitePublic)
async def revoke_invite(invite_id: Id, principal: PartnerManager, request: Request) -> InvitePublic:
    """Revokes a pending invite (its link stops working)."""
    invite = await identity(request).invites.revoke(
        principal.partner_id or "", invite_id, by_owner=principal.role == "owner"
    )
    return InvitePublic.of(invite)


# -- a customer's users -----------------------------------------------------------------------


@router.get("/partner/customers/{customer_id}/users", response_model=Page[UserPublic])
async def list_customer_users(
    customer_id: Id, principal: PartnerReader, request: Request, cursor: Cursor = None, limit: Limit = 50
) -> Page[UserPublic]:
    """The users of one of the partner's customers."""
    _person(principal)
    await _customer_of(request, principal, customer_id)
    users, after = await identity(request).accounts.page(
        principal.partner_id or "", customer_id=customer_id, cursor=cursor, limit=limit
    )
    return Page(data=[UserPublic.of(u) for u in users], next_cursor=after)


@router.post("/partner/customers/{customer_id}/invites", response_model=InviteCreated, status_code=201)
async def invite_customer_user(
    customer_id: Id, body: CustomerUserInvite, principal: PartnerManager, request: Request
) -> InviteCreated:
    """Invites a user for one of the partner's customers (another partner's customer,
    or none: 404)."""
    await _customer_of(request, principal, customer_id)
    invite, token = await identity(request).invites.create(
        kind="customer",
        partner_id=principal.partner_id or "",
        customer_id=customer_id,
        email=body.email,
        invited_by=principal.email or "",
    )
    return _created(request, invite, token)


@router.delete("/partner/customers/{customer_id}/users/{user_id}", status_code=204)
async def remove_customer_user(customer_id: Id, user_id: Id, principal: PartnerManager, request: Request) -> Response:
    """Removes a customer's user; their sessions end at once."""
    await identity(request).accounts.remove(principal, user_id, customer_id=customer_id)
    return Response(status_code=204)


# -- the platform admin -------------------------------------------------------------------------


@router.post("/admin/partners/{partner_id}/invites", response_model=InviteCreated, status_code=201)
async def invite_partner_owner(
    partner_id: Id, body: AdminPartnerInvite, principal: PlatformAdmin, request: Request
) -> InviteCreated:
    """Invites a partner's user, typically its first owner (no such partner: 404)."""
    state, keys = keys_call(request)
    await state.backends.call(
        keys.GetPartner, keys_pb2.GetPartnerRequest(actor=keys_pb2.Actor(partner_id=partner_id)), what="partner"
    )
    invite, token = await identity(request).invites.create(
        kind="partner", partner_id=partner_id, email=body.email, role=body.role, invited_by=principal.email or ""
    )
    return _created(request, invite, token)


@router.get("/admin/partners/{partner_id}/users", response_model=Page[UserPublic])
async def list_partner_users_as_admin(
    partner_id: Id, principal: PlatformAdmin, request: Request, cursor: Cursor = None, limit: Limit = 50
) -> Page[UserPublic]:
    """A partner's team, for the platform admin."""
    users, after = await identity(request).accounts.page(partner_id, customer_id=None, cursor=cursor, limit=limit)
    return Page(data=[UserPublic.of(u) for u in users], next_cursor=after)

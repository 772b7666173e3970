"""Signing in and out, the current session, password change, and accepting an invite.

Sign-in and the invite routes are the only ones that take no principal (they are how one
gets a principal); every other route here needs one.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from cg_bff import errors
from cg_bff.auth import ID_PATTERN, identity, keys_call
from cg_bff.auth.credentials import SESSION_COOKIE, csrf_token
from cg_bff.auth.schemas import (
    InviteAccept,
    InviteLookup,
    PasswordChange,
    PrincipalPublic,
    SessionPublic,
    SignedIn,
    SignIn,
    UserPublic,
    at,
)
from cg_bff.auth.sessions import Live, clear_session_cookie, set_session_cookie
from cg_bff.principal import Authenticated
from creditgate.keys.v1 import keys_pb2

router = APIRouter(prefix="/auth", tags=["auth"])

# OpenAPI marks the routes that need no principal (the cross-tenant matrix reads it).
ANONYMOUS = {"x-cg-anonymous": True}
InviteToken = Annotated[str, Path(min_length=1, max_length=200, pattern=ID_PATTERN)]


@router.post("/sign-in", response_model=SignedIn, openapi_extra=ANONYMOUS)
async def sign_in(body: SignIn, request: Request, response: Response) -> SignedIn:
    """Signs in with email and password: sets the ``cg_session`` cookie (HttpOnly,
    SameSite=Lax, Secure over TLS) and answers the session's CSRF token. Wrong email or
    password: 401 ``invalid_credentials``; too many failures for the account or the client
    address: 429 ``too_many_attempts`` with ``Retry-After``."""
    auth = identity(request)
    user, secret = await auth.sign_in(body.email, body.password, request)
    if (previous := request.cookies.get(SESSION_COOKIE)) and (live := await auth.store.live(previous)):
        await auth.store.end(live.session.id)  # a new sign-in replaces the browser's old session
    set_session_cookie(response, request, auth.settings, secret)
    return SignedIn(user=UserPublic.of(user), csrf_token=csrf_token(secret))


@router.post("/sign-out", status_code=204)
async def sign_out(
    principal: Authenticated,
    request: Request,
    everywhere: Annotated[bool, Query(description="End every session of the user, not only this one.")] = False,
) -> Response:
    """Ends this session at once (its cookie stops working), or with ``everywhere`` every
    session of the user (a lost laptop)."""
    if principal.session_id is None or principal.user_id is None:
        raise errors.forbidden("Sign-out ends a browser session; revoke an API token instead.")
    auth = identity(request)
    if everywhere:
        await auth.store.end_all(principal.user_id)
    else:
        await auth.store.end(principal.session_id)
    answer = Response(status_code=204)
    clear_session_cookie(answer, request, auth.settings)
    return answer


@router.get("/session", response_model=SessionPublic)
async def session(principal: Authenticated, request: Request) -> SessionPublic:
    """Who is signed in (or which token this is), and the session's CSRF token."""
    if principal.via == "token":
        return SessionPublic(principal=PrincipalPublic.of(principal))
    auth = identity(request)
    live: Live = request.state.cg_session  # what authenticated this request
    secret = request.cookies.get(SESSION_COOKIE, "")
    return SessionPublic(
        user=UserPublic.of(live.user),
        principal=PrincipalPublic.of(principal),
        csrf_token=csrf_token(secret),
        expires_at=at(live.session.expires_at_ms),
        idle_expires_at=at(auth.store.idle_expires_at_ms(live.session)),
    )


@router.post("/password", status_code=204)
async def change_password(body: PasswordChange, principal: Authenticated, request: Request) -> Response:
    """Changes the signed-in user's password; every other session of the user ends (this
    one stays). A wrong current password is 400 (and counts as a failed sign-in)."""
    if principal.via != "session":
        raise errors.forbidden("A password is changed by its user, signed in.")
    await identity(request).change_password(principal, body.current_password, body.new_password, request)
    return Response(status_code=204)


@router.get("/invites/{token}", response_model=InviteLookup, openapi_extra=ANONYMOUS)
async def get_invite(token: InviteToken, request: Request) -> InviteLookup:
    """What an invite offers. Unknown: 404; used, expired or revoked: 409
    ``invite_accepted`` / ``invite_expired`` / ``invite_revoked``."""
    invite = await identity(request).invites.by_token(token)
    state, keys = keys_call(request)
    partner_name = customer_name = ""
    actor = keys_pb2.Actor(partner_id=invite.partner_id)
    try:
        partner = await state.backends.call(keys.GetPartner, keys_pb2.GetPartnerRequest(actor=actor))
        partner_name = partner.name
        if invite.customer_id:
            customer = await state.backends.call(
                keys.GetCustomer, keys_pb2.GetCustomerRequest(actor=actor, customer_id=invite.customer_id)
            )
            customer_name = customer.name
    except errors.ApiError:
        pass  # the names are a courtesy: the invite stands without them
    return InviteLookup(
        kind=invite.kind,  # type: ignore[arg-type]
        email=invite.email,
        role=invite.role,  # type: ignore[arg-type]
        partner_name=partner_name,
        customer_name=customer_name,
        expires_at=at(invite.expires_at_ms),
    )


@router.post("/invites/{token}/accept", response_model=SignedIn, openapi_extra=ANONYMOUS)
async def accept_invite(token: InviteToken, body: InviteAccept, request: Request, response: Response) -> SignedIn:
    """Accepts an invite: makes the user with this password and signs them in (the invite
    is then used up)."""
    auth = identity(request)
    invite = await auth.invites.by_token(token)
    password_hash = await auth.new_password_hash(body.password, invite.email)
    user = await auth.invites.accept(token, body.name.strip(), password_hash)
    secret = await auth.start_session(user, request)
    set_session_cookie(response, request, auth.settings, secret)
    return SignedIn(user=UserPublic.of(user), csrf_token=csrf_token(secret))

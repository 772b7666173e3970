"""Management API tokens: a partner's automation authenticates with ``Authorization:
Bearer cgm_...`` (no cookie, no CSRF).

Made and revoked by an owner or admin, signed in (``PartnerManager``: a token never makes
or revokes tokens); listed by any of the partner's users. The secret is answered once, at
creation. A revoked token is refused by the very next request (looked up every time).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from cg_bff import errors
from cg_bff.auth import ID_PATTERN, identity
from cg_bff.auth.schemas import TokenCreate, TokenCreated, TokenPublic
from cg_bff.principal import PartnerManager, PartnerReader
from cg_bff.requests import Cursor, Limit, Page

router = APIRouter(prefix="/partner/tokens", tags=["tokens"])

Id = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]


@router.get("", response_model=Page[TokenPublic])
async def list_tokens(
    principal: PartnerReader,
    request: Request,
    include_revoked: Annotated[bool, Query(description="Also list revoked tokens.")] = False,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[TokenPublic]:
    """The partner's tokens (never their secrets), oldest first, with when each was last used."""
    if principal.via != "session":
        raise errors.forbidden("API tokens are managed by people, signed in: a token may not list them.")
    tokens, after = await identity(request).tokens.page(
        principal.partner_id or "", include_revoked=include_revoked, cursor=cursor, limit=limit
    )
    return Page(data=[TokenPublic.of(t) for t in tokens], next_cursor=after)


@router.post("", response_model=TokenCreated, status_code=201)
async def create_token(body: TokenCreate, principal: PartnerManager, request: Request) -> TokenCreated:
    """Makes a token with scope ``read`` (reads only: GET routes, and the quote and the
    billing preview, which move nothing) or ``write`` (what an admin user may do, but
    manage users and tokens). Its ``secret`` is shown this once."""
    name = body.name.strip()
    if not name:
        raise errors.invalid("A token needs a name.", {"name": "not only spaces"})
    token, secret = await identity(request).tokens.create(
        principal.partner_id or "", name, body.scope, principal.email or ""
    )
    return TokenCreated(token=TokenPublic.of(token), secret=secret)


@router.get("/{token_id}", response_model=TokenPublic)
async def get_token(token_id: Id, principal: PartnerReader, request: Request) -> TokenPublic:
    if principal.via != "session":
        raise errors.forbidden("API tokens are managed by people, signed in: a token may not read them.")
    return TokenPublic.of(await identity(request).tokens.get(principal.partner_id or "", token_id))


@router.delete("/{token_id}", response_model=TokenPublic)
async def revoke_token(token_id: Id, principal: PartnerManager, request: Request) -> TokenPublic:
    """Revokes the token: its next request is refused (401). Revoking it again changes nothing."""
    return TokenPublic.of(await identity(request).tokens.revoke(principal.partner_id or "", token_id))

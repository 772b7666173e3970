"""White-label branding: the name, logo and colours a partner's customers see in their
portal. The partner reads it (``PartnerReader``) and replaces it (``PartnerWriter``:
owners, admins, read-write tokens); its customers' users read it (``CustomerUser``).
Each acts on the principal's own partner only: no id in the request names a tenant."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from sqlalchemy.exc import IntegrityError

from cg_bff.models.branding import PartnerBranding
from cg_bff.principal import CustomerUser, PartnerReader, PartnerWriter
from cg_bff.schemas.branding import BrandingPublic, BrandingUpdate
from cg_bff.schemas.money import at_ms
from cg_bff.state import BffState
from cg_bff.tenant import keys_of, state_of
from creditgate.keys.v1 import keys_pb2 as pb

router = APIRouter(tags=["branding"])


async def _public(state: BffState, partner_id: str) -> BrandingPublic:
    async with state.sessions() as session:
        row = await session.get(PartnerBranding, partner_id)
    name = row.display_name if row is not None else None
    if not name:
        partner = await state.backends.call(
            keys_of(state).GetPartner, pb.GetPartnerRequest(actor=pb.Actor(partner_id=partner_id)), what="partner"
        )
        name = partner.name
    return BrandingPublic(
        partner_id=partner_id,
        display_name=name,
        custom_name=row is not None and bool(row.display_name),
        logo_url=row.logo_url if row is not None else None,
        primary_color=row.primary_color if row is not None else None,
        accent_color=row.accent_color if row is not None else None,
        updated_at=at_ms(row.updated_at_ms) if row is not None else None,
    )


@router.get("/partner/branding", response_model=BrandingPublic)
async def get_partner_branding(principal: PartnerReader, request: Request) -> BrandingPublic:
    """The branding your customers' portal shows."""
    return await _public(state_of(request), principal.partner_id or "")


@router.put("/partner/branding", response_model=BrandingPublic)
async def put_partner_branding(body: BrandingUpdate, principal: PartnerWriter, request: Request) -> BrandingPublic:
    """Replaces the branding: display name (null: your partner name), logo URL (https://, or
    a data:image/png|jpeg|gif|webp URL of at most 32 KiB; shown as an image only) and the
    primary and accent colours (#rrggbb; null: the product's)."""
    state = state_of(request)
    partner_id = principal.partner_id or ""
    for attempt in (1, 2):  # a first PUT racing another: the loser updates the winner's row
        async with state.sessions() as session:
            row = await session.get(PartnerBranding, partner_id) or PartnerBranding(
                partner_id=partner_id, updated_at_ms=0
            )
            row.display_name = body.display_name
            row.logo_url = body.logo_url
            row.primary_color = body.primary_color
            row.accent_color = body.accent_color
            row.updated_at_ms = int(time.time() * 1000)
            session.add(row)
            try:
                await session.commit()
                break
            except IntegrityError:
                await session.rollback()
                if attempt == 2:
                    raise
    return await _public(state, partner_id)


@router.get("/customer/branding", response_model=BrandingPublic)
async def get_customer_branding(principal: CustomerUser, request: Request) -> BrandingPublic:
    """Your provider's branding, for your portal."""
    return await _public(state_of(request), principal.partner_id or "")

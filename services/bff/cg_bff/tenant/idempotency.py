"""The Idempotency-Key of a POST that moves money or makes a secret, and what it was
first used for.

A route calls ``claim(state, scope, key, action, ids, body)`` before it calls keys or the
ledger. The first call under a key records the request's fingerprint (SHA-256 of the
action, the path ids and the body as canonical JSON, defaults included, so key order and
spacing do not matter); a retry with the same request passes and reaches keys / the
ledger, which answer the first outcome (``replayed``); the same key with another
request (another body, another key id, another action) is refused with 409
``idempotency_key_reused`` and nothing moves. ``scope`` is the tenant whose keys these
are: ``partner:<id>``, ``customer:<id>`` or ``admin`` (two tenants never share a key).

A request refused before anything was stored downstream — 400 (keys and the ledger
validate before they write), 403 (not allowed now) or 404 (not this tenant's) — does not
use its key up:
``idempotent(...)`` forgets the record it made, so the client may fix the request and
send it again under the same key. Any other outcome (success, 409, 503) keeps it.

Downstream ids are derived here too, in one place: keys scopes idempotency keys by the
acting tenant itself, so it gets the header as is; the ledger's ids are global, so they
are ``bff:<partner id>:<action>:<key>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator

from pydantic import BaseModel
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from cg_bff import errors
from cg_bff.models.tenant import IdempotencyRecord
from cg_bff.state import BffState


def fingerprint(action: str, ids: dict[str, str], body: BaseModel | None) -> str:
    payload = {"action": action, "ids": ids, "body": body.model_dump(mode="json") if body is not None else None}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def ledger_id(partner_id: str, action: str, key: str) -> str:
    """The ledger's idempotency id for a partner's (or its admin's) money move: the ledger's
    ids are global, so two partners' Idempotency-Keys never meet."""
    return f"bff:{partner_id}:{action}:{key}"


async def claim(
    state: BffState, scope: str, key: str, action: str, ids: dict[str, str], body: BaseModel | None
) -> bool:
    """Records (or checks) what ``key`` is used for in ``scope``; 409 if it was used for
    another request. True when this is the key's first use (False: a retry)."""
    mine = fingerprint(action, ids, body)
    record = IdempotencyRecord(
        scope=scope, idempotency_key=key, action=action, fingerprint=mine, created_at_ms=int(time.time() * 1000)
    )
    async with state.sessions() as session:
        first = await session.get(IdempotencyRecord, (scope, key))
        if first is None:
            session.add(record)
            try:
                await session.commit()
                return True
            except IntegrityError:  # the same key, concurrently: whoever won decides
                await session.rollback()
                first = await session.get(IdempotencyRecord, (scope, key))
        if first is None or first.fingerprint != mine:
            used_for = first.action if first is not None else "another request"
            raise errors.ApiError(
                409,
                "idempotency_key_reused",
                f"This Idempotency-Key was already used for another request ({used_for}); "
                "a retry must repeat the same request, a new request needs a new key.",
                {"Idempotency-Key": "used for another request"},
            )
        return False


# Refusals made before keys or the ledger stored anything: the key is not used up.
NOTHING_STORED = (400, 403, 404)


@contextlib.asynccontextmanager
async def idempotent(
    state: BffState, scope: str, key: str, action: str, ids: dict[str, str], body: BaseModel | None
) -> AsyncIterator[bool]:
    """``claim`` around the block that calls keys or the ledger (yields whether this is
    the key's first use); a 400, 403 or 404 from the block forgets a record this call made."""
    first = await claim(state, scope, key, action, ids, body)
    try:
        yield first
    except errors.ApiError as e:
        if first and e.status in NOTHING_STORED:
            async with state.sessions() as session:
                await session.exec(
                    delete(IdempotencyRecord).where(
                        col(IdempotencyRecord.scope) == scope, col(IdempotencyRecord.idempotency_key) == key
                    )
                )
                await session.commit()
        raise

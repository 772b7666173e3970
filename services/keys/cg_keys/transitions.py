"""A key's status: what is stored, what a read shows, and changes decided under the
key's row lock.

Stored: ``provisioning`` -> ``active`` | ``failed``; then ``suspended``, ``exhausted``,
``revoked`` (final). ``expired`` is never stored: it is an active key past its expiry,
derived at read time here and, at the instant, by every proxy replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_keys.models import VirtualKey

# Suspension reasons the worker sets and lifts by itself (only_if_reason on resume); a
# suspension for any other reason replaces them.
AUTOMATIC_REASONS = frozenset({"deposit_line"})


def effective_status(key: VirtualKey, now: float | None = None) -> str:
    if key.status == "active" and key.expires_at and key.expires_at <= (now or time.time()):
        return "expired"
    return key.status


async def transition(
    sessions: async_sessionmaker[AsyncSession],
    key_id: str,
    status: str,
    reason: str,
    allowed: Callable[[VirtualKey], bool],
) -> tuple[VirtualKey, bool]:
    """Sets the status if ``allowed(key)`` holds for the key as it is now, decided under
    the row's lock (SQLite: the write lock): a check made before, on a read, could be
    stale by then. ``allowed`` may raise to refuse an impossible transition. Returns the
    key and whether it changed."""
    async with sessions() as session:
        key = await session.get(VirtualKey, key_id, with_for_update=True)
        if not allowed(key):
            return key, False
        key.status, key.status_reason = status, reason[:200]
        session.add(key)
        await session.commit()
        return key, True


async def set_status(sessions: async_sessionmaker[AsyncSession], key_id: str, status: str, reason: str) -> VirtualKey:
    key, _ = await transition(sessions, key_id, status, reason, lambda _: True)
    return key

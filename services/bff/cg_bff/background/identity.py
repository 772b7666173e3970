"""Identity's upkeep: the bootstrap admin at start, then ended sessions and old sign-in
failures swept away now and then (each replica may do it: deleting twice is harmless)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import delete
from sqlmodel import col

from cg_bff.auth import SessionAuth
from cg_bff.auth.credentials import now_ms
from cg_bff.models.identity import SigninFailure, UserSession
from cg_bff.state import BffState

log = logging.getLogger(__name__)
SWEEP_EVERY_S = 600


async def run(state: BffState, stop: asyncio.Event) -> None:
    auth = state.auth
    if not isinstance(auth, SessionAuth):
        return
    while not stop.is_set():
        try:
            await auth.ready()
            await sweep(state)
        except Exception:  # the database may be briefly away: try again at the next round
            log.exception("identity upkeep failed; retrying")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=SWEEP_EVERY_S)


async def sweep(state: BffState) -> None:
    now, s = now_ms(), state.settings
    async with state.sessions() as session:
        await session.exec(
            delete(UserSession).where(
                (col(UserSession.expires_at_ms) <= now)
                | (col(UserSession.last_seen_at_ms) <= now - s.session_idle_s * 1000)
            )
        )
        await session.exec(delete(SigninFailure).where(col(SigninFailure.at_ms) <= now - s.signin_window_s * 1000))
        await session.commit()

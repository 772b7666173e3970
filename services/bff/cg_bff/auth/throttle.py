"""Sign-in throttling, per account and per client address, in the database.

Every password check (a sign-in, or the current password of a password change) is first
written down as a failure in two buckets, the account's (``account:`` + SHA-256 of the
email as typed, lower-cased, whether or not such an account exists) and the client
address's; a check that succeeds takes its rows back and clears the account's bucket.
Before a check, a bucket holding ``max`` failures in the last ``window`` seconds refuses
it (429 ``too_many_attempts``, ``Retry-After`` = when the oldest failure that counts
leaves the window) without looking at the account or the password, so the answer is the
same for an account that exists and one that does not.

Writing the attempt down before the slow hash (not after) means that concurrent guesses
count against each other at once; the count and the insert share a transaction. The
rows live in the database so that every replica of the BFF counts the same attempts.
Rows older than the window are deleted as new ones come.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_bff.auth.credentials import digest, now_ms
from cg_bff.errors import ApiError
from cg_bff.models.identity import SigninFailure
from cg_bff.settings import Settings


def account_bucket(email: str) -> str:
    return "account:" + digest(email.strip().lower())


def address_bucket(address: str) -> str:
    return "address:" + address[:64]


def too_many(retry_after_s: int) -> ApiError:
    return ApiError(
        429,
        "too_many_attempts",
        "Too many failed sign-in attempts; wait before trying again.",
        headers={"Retry-After": str(retry_after_s)},
    )


@dataclass(frozen=True)
class Attempt:
    """The failure rows an attempt wrote (taken back if it succeeds)."""

    email: str
    row_ids: tuple[int, ...]


class Throttle:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self.sessions = sessions
        self.window_ms = settings.signin_window_s * 1000
        self.limits = {
            "account": settings.signin_max_failures_per_account,
            "address": settings.signin_max_failures_per_address,
        }

    async def begin(self, email: str, address: str) -> Attempt:
        """Counts the attempt against both buckets, or raises 429 when one is full."""
        now = now_ms()
        buckets = {"account": account_bucket(email), "address": address_bucket(address)}
        async with self.sessions() as session:
            await session.exec(delete(SigninFailure).where(col(SigninFailure.at_ms) <= now - self.window_ms))
            wait_ms = 0
            for kind, bucket in buckets.items():
                wait_ms = max(wait_ms, await self._wait_ms(session, bucket, self.limits[kind], now))
            if wait_ms > 0:
                await session.commit()
                raise too_many(max(1, math.ceil(wait_ms / 1000)))
            rows = [SigninFailure(bucket=bucket, at_ms=now) for bucket in buckets.values()]
            session.add_all(rows)
            await session.commit()
            return Attempt(email, tuple(row.id for row in rows if row.id is not None))

    async def _wait_ms(self, session: AsyncSession, bucket: str, limit: int, now: int) -> int:
        times = (
            await session.exec(
                select(SigninFailure.at_ms)
                .where(SigninFailure.bucket == bucket, col(SigninFailure.at_ms) > now - self.window_ms)
                .order_by(col(SigninFailure.at_ms))
            )
        ).all()
        if len(times) < limit:
            return 0
        # the bucket is under its limit again once all but limit - 1 of these have left the window
        return times[len(times) - limit] + self.window_ms - now

    async def succeeded(self, attempt: Attempt) -> None:
        """The password was right: the attempt's rows go, and the account starts afresh."""
        async with self.sessions() as session:
            await session.exec(delete(SigninFailure).where(col(SigninFailure.id).in_(attempt.row_ids)))
            await session.exec(delete(SigninFailure).where(col(SigninFailure.bucket) == account_bucket(attempt.email)))
            await session.commit()

"""Passwords: the policy a new one must meet, and argon2id hashing off the event loop.

argon2-cffi's defaults are RFC 9106's second recommended profile (argon2id, t=3,
m=64 MiB, p=4); the parameters travel in the hash string, so raising them later only
needs ``needs_rehash`` at the next sign-in. Hashing is deliberately slow and
memory-hungry: it runs in a thread, and at most ``concurrency`` at a time, so a burst of
sign-ins neither stalls the API nor takes unbounded memory.

An unknown account is checked against a dummy hash, so that a wrong email takes as long
as a wrong password: the answer's timing does not say whether the account exists.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MAX_LENGTH = 1024  # longer is refused: no one types it, and it would only cost us hashing time


def policy_errors(password: str, email: str, min_length: int) -> str | None:
    """What is wrong with ``password`` as a new password for ``email`` (None: nothing)."""
    if len(password) < min_length:
        return f"at least {min_length} characters"
    if len(password) > MAX_LENGTH:
        return f"at most {MAX_LENGTH} characters"
    if not password.strip():
        return "not only spaces"
    if password.strip().lower() == email.strip().lower():
        return "must not be the email address"
    return None


class Passwords:
    def __init__(self, concurrency: int = 4) -> None:
        self._hasher = PasswordHasher()
        self._slots = asyncio.Semaphore(concurrency)
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; ``password_hash`` None (no such account) costs
        the same time and answers False."""
        if password_hash is None:
            if self._dummy is None:
                self._dummy = await self.hash("not a password of anyone's")
            password_hash, password = self._dummy, password + "\x00"
        async with self._slots:
            return await asyncio.to_thread(self._verify, password_hash, password)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

"""A key's status: what is stored, what a read shows, why a key is suspended, and
changes decided under the key's row lock.

Stored: ``provisioning`` -> ``active`` | ``failed``; then ``suspended``, ``exhausted``,
``revoked`` (final). ``expired`` is never stored: it is an active key past its expiry,
derived at read time here and, at the instant, by every proxy replica.

A suspended key says why (``Suspension``, the proto's ``SuspensionReason``): the worker
suspends a customer-created key below the deposit line and lifts exactly those
suspensions (``AUTOMATIC``); a deliberate suspension (``BY_PARTNER``) outranks it and
only a deliberate resume lifts it. ``status_reason`` holds people's words beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from cg_keys.errors import InvalidArgument
from cg_keys.models import VirtualKey
from cg_keys.repository import KeyRepository
from creditgate.keys.v1 import keys_pb2


class Suspension(StrEnum):
    """Why a key is suspended, as stored (``""``: it is not)."""

    NONE = ""
    BY_PARTNER = "by_partner"
    DEPOSIT_LINE = "deposit_line"


# Suspensions the worker makes and lifts by itself; any other replaces them, never the reverse.
AUTOMATIC = frozenset({Suspension.DEPOSIT_LINE})

_TO_PB = {
    Suspension.NONE: keys_pb2.SUSPENSION_REASON_UNSPECIFIED,
    Suspension.BY_PARTNER: keys_pb2.SUSPENSION_REASON_BY_PARTNER,
    Suspension.DEPOSIT_LINE: keys_pb2.SUSPENSION_REASON_DEPOSIT_LINE,
}
_FROM_PB: dict[int, Suspension] = {number: suspension for suspension, number in _TO_PB.items()}


def suspension_pb(stored: str) -> keys_pb2.SuspensionReason.ValueType:
    return _TO_PB.get(Suspension(stored), keys_pb2.SUSPENSION_REASON_UNSPECIFIED)


def suspension_from_pb(number: int, field: str) -> Suspension:
    """A request's ``SuspensionReason`` (UNSPECIFIED is ``Suspension.NONE``); a number the
    enum does not have is INVALID_ARGUMENT."""
    if number not in _FROM_PB:
        raise InvalidArgument(field, f"unknown SuspensionReason {number}")
    return _FROM_PB[number]


def effective_status(key: VirtualKey, now: float | None = None) -> str:
    if key.status == "active" and key.expires_at and key.expires_at <= (now or time.time()):
        return "expired"
    return key.status


async def transition(
    repo: KeyRepository,
    key_id: str,
    status: str,
    reason: str,
    allowed: Callable[[VirtualKey], bool],
    suspension: Suspension = Suspension.NONE,
) -> tuple[VirtualKey, bool]:
    """Sets the status (with its reason, and its suspension: none unless given) if
    ``allowed(key)`` holds for the key as it is under its row lock. ``allowed`` may raise
    to refuse an impossible transition. Returns the key and whether it changed."""
    async with repo.locked(key_id) as (_, key):
        if not allowed(key):
            return key, False
        key.status, key.status_reason, key.suspension = status, reason[:200], suspension
        return key, True


async def set_status(repo: KeyRepository, key_id: str, status: str, reason: str) -> VirtualKey:
    key, _ = await transition(repo, key_id, status, reason, lambda _: True)
    return key

"""Calls on one key, for the partner's and the customer's routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cg_bff import errors
from cg_bff.principal import Principal
from cg_bff.schemas.keys import KeyDetailPublic
from cg_bff.state import BffState
from cg_bff.tenant import keys_of
from creditgate.keys.v1 import keys_pb2 as pb

Resp = TypeVar("Resp")
# keys' field names that the API spells otherwise
_FIELD_NAMES = {"expires_at_unix": "expires_at"}


async def keys_call(state: BffState, method: Callable[..., Awaitable[Resp]], request: Any) -> Resp:
    """``Backends.call`` for a key, with keys' field names in the API's spelling."""
    try:
        return await state.backends.call(method, request, what="key")
    except errors.ApiError as e:
        e.fields = {_FIELD_NAMES.get(k, k): v for k, v in e.fields.items()}
        raise


async def detail(state: BffState, principal: Principal, key_id: str) -> KeyDetailPublic:
    """The key as the principal's tenant reads it (404 if it is not theirs)."""
    got = await keys_call(state, keys_of(state).GetKey, pb.GetKeyRequest(actor=principal.actor(), key_id=key_id))
    return KeyDetailPublic.of_detail(got)

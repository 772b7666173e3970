"""Request conventions shared by the routes: the Idempotency-Key header and cursor pages.

- ``IdempotencyKey``: every POST that moves money or makes a secret requires the header
  ``Idempotency-Key`` (1-80 printable characters); it is passed to keys or the ledger as
  their idempotency key (scoped there by the acting tenant), so a retried request
  converges on the first outcome. Missing: 400 ``idempotency_key_required``.
- ``Page``: a list answer is ``{"data": [...], "next_cursor": "..." | null}``; the client
  passes ``cursor`` back for the next page and ``limit`` (1-200, default 50).
  ``encode_cursor``/``decode_cursor`` make the cursor opaque (base64url JSON); a cursor
  that is not one of ours is a 400 naming ``cursor``.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Header, Query
from pydantic import BaseModel

from cg_bff import errors

T = TypeVar("T")
MAX_IDEMPOTENCY_KEY = 80


def _idempotency_key(
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> str:
    if not idempotency_key:
        raise errors.invalid(
            "This request moves money or makes a secret: send an Idempotency-Key header (a retry with the same "
            "key is answered with the first outcome).",
            {"Idempotency-Key": "required"},
            code="idempotency_key_required",
        )
    if len(idempotency_key) > MAX_IDEMPOTENCY_KEY or not idempotency_key.isprintable():
        raise errors.invalid(
            "The Idempotency-Key header is not valid.",
            {"Idempotency-Key": f"1 to {MAX_IDEMPOTENCY_KEY} printable characters"},
        )
    return idempotency_key


IdempotencyKey = Annotated[str, Depends(_idempotency_key)]


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = None


Limit = Annotated[int, Query(ge=1, le=200, description="Items per page.")]
Cursor = Annotated[str | None, Query(max_length=512, description="From the previous page's next_cursor.")]


def encode_cursor(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        raise errors.invalid("The cursor is not one of ours.", {"cursor": "not a cursor from this API"}) from None
    if not isinstance(value, dict):
        raise errors.invalid("The cursor is not one of ours.", {"cursor": "not a cursor from this API"})
    return value

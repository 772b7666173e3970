"""Cursor pages over identity's tables, ordered by (created_at_ms, id): the cursor is the
last row's pair (``requests.encode_cursor``), and the next page starts strictly after it."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import true
from sqlmodel import col

from cg_bff import errors
from cg_bff.requests import decode_cursor, encode_cursor

_ID = re.compile(r"[A-Za-z0-9_]{1,64}")


def page_after(rows: list[Any], limit: int) -> str | None:
    """The cursor after a page fetched with ``limit + 1`` rows (None: the last page);
    rows are ordered by (created_at_ms, id)."""
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return encode_cursor({"t": last.created_at_ms, "id": last.id})


def after_cursor(model: Any, cursor: str | None) -> Any:
    """The WHERE clause that resumes a (created_at_ms, id) ordering after ``cursor``."""
    value = decode_cursor(cursor)
    if value is None:
        return true()
    t, last_id = value.get("t"), value.get("id")
    if not (isinstance(t, int) and 0 <= t < 2**62 and isinstance(last_id, str) and _ID.fullmatch(last_id)):
        raise errors.invalid("The cursor is not one of ours.", {"cursor": "not a cursor from this API"})
    return (col(model.created_at_ms) > t) | ((col(model.created_at_ms) == t) & (col(model.id) > last_id))

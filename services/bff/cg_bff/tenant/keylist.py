"""A partner's keys table: filters, sort and a cursor over what keys' ``ListKeys`` answers.

keys answers a partner's keys whole (one query, the spend of each from one ledger call);
the table's filters and sort apply here, and the cursor is a keyset one — the sort value
and id of the last row — so a page never repeats or skips a key when keys are created or
revoked between pages.
"""

from __future__ import annotations

from typing import Literal

from cg_bff import errors
from cg_bff.requests import decode_cursor, encode_cursor
from cg_bff.schemas.keys import STATUS_NAMES, KeyStatus
from creditgate.keys.v1 import keys_pb2 as pb

Sort = Literal["name", "-name", "created", "-created", "spend", "-spend", "last_used", "-last_used"]
SortValue = str | int


def _value(k: pb.Key, field: str) -> SortValue:
    if field == "name":
        return k.name.casefold()
    if field == "created":
        return k.created_at_unix
    if field == "spend":
        return k.spent_ucr
    return k.last_used_unix


def select_keys(keys: list[pb.Key], status: KeyStatus | None, customer_id: str | None, q: str | None) -> list[pb.Key]:
    """The filters: status; customer (keys billed to it or created by it); ``q``, a part of
    the name (any case) or the start of the key's prefix."""
    needle = (q or "").strip()
    out = []
    for k in keys:
        if status is not None and STATUS_NAMES.get(k.status) != status:
            continue
        if customer_id and customer_id not in (k.owner_customer_id, k.billing.customer_id):
            continue
        if needle and needle.casefold() not in k.name.casefold() and not k.prefix.startswith(needle):
            continue
        out.append(k)
    return out


def page(keys: list[pb.Key], sort: Sort, cursor: str | None, limit: int) -> tuple[list[pb.Key], str | None]:
    """One page of ``keys`` in ``sort`` order (``-`` descending, ties by id), after ``cursor``."""
    field, descending = sort.lstrip("-"), sort.startswith("-")
    ordered = sorted(keys, key=lambda k: (_value(k, field), k.id), reverse=descending)
    after = decode_cursor(cursor)
    if after is not None:
        if after.get("sort") != sort or not isinstance(after.get("id"), str):
            raise errors.invalid("The cursor is from another sort order.", {"cursor": "not for this sort"})
        value = after.get("value")
        if type(value) is not type(_value(pb.Key(), field)):
            raise errors.invalid("The cursor is not one of ours.", {"cursor": "not a cursor from this API"})
        last: tuple[SortValue, str] = (value, after["id"])  # str or int, checked above

        def beyond(k: pb.Key) -> bool:
            mine = (_value(k, field), k.id)
            return mine < last if descending else mine > last

        ordered = [k for k in ordered if beyond(k)]
    rows = ordered[:limit]
    more = len(ordered) > limit
    next_cursor = encode_cursor({"sort": sort, "value": _value(rows[-1], field), "id": rows[-1].id}) if more else None
    return rows, next_cursor

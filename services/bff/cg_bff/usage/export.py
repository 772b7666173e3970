"""The request log as CSV: streamed a chunk of rows at a time (memory stays flat however
long the period), one header line, the same fields as the JSON rows.

A cell that a spreadsheet would run as a formula (it starts with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return) is written with a leading ``'`` (OWASP's advice on CSV
injection); numbers are written as they are.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

from cg_bff.usage.schemas import CustomerRequestPublic, RequestPublic

PARTNER_COLUMNS = (
    "time",
    "request_id",
    "key_id",
    "customer_id",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_ucr",
    "cost_credits",
    "ai_credits_uai",
    "ai_credits",
    "ai_credit_price_cents",
    "source",
    "outcome",
    "latency_ms",
    "stream",
    "price_book_version",
)
CUSTOMER_COLUMNS = (
    "time",
    "request_id",
    "key_id",
    "model",
    "input_tokens",
    "output_tokens",
    "ai_credits_uai",
    "ai_credits",
    "source",
    "outcome",
    "latency_ms",
    "stream",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _lines(rows: list[list[Any]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode()


async def csv_stream(chunks: AsyncIterator[list[Any]], for_partner: bool) -> AsyncIterator[bytes]:
    columns = PARTNER_COLUMNS if for_partner else CUSTOMER_COLUMNS
    model: type[CustomerRequestPublic] = RequestPublic if for_partner else CustomerRequestPublic
    yield _lines([list(columns)])
    async for chunk in chunks:
        rows = []
        for r in chunk:
            data = model.of(r).model_dump(mode="json")
            rows.append([cell(data[c]) for c in columns])
        yield _lines(rows)

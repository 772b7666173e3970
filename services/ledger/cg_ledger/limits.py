"""Every bound the ledger enforces, in one place, and the checks that apply them.

Amounts. One amount (a deposit, grant, transfer, key funding with its fee, key deposit,
or a hold / charge priced from tokens) is at most ``MAX_AMOUNT`` = 10^15 micro-units:
a billion credits, $10M. Above it: ``OutOfRange``; zero or negative: ``InvalidArgument``
(a malformed request). The bound keeps every single movement far from the 64-bit edge,
so arithmetic on it never overflows; the counters that add amounts up are guarded
separately in SQL (``sql``): no counter ever passes ``MAX_COUNTER`` (int64).

Strings. Whatever the ledger stores has a maximum length, and a longer value is refused
with ``InvalidArgument`` naming the field, never cut:

| field                                          | at most | also                 |
|------------------------------------------------|---------|----------------------|
| idempotency_id, request_id                     | 120     | required, printable  |
| account ids (``<kind>:<owner>``)                | 80      | printable            |
| partner_id, key_id (owners)                    | 64      | printable, no ``:``  |
| rate_limit.key                                 | 80      | printable            |
| memo (deposit, grant, transfer), void reason   | 200     | no NUL               |
| model                                          | 120     | no NUL               |
| price_book_version                             | 60      | no NUL               |
| decimals (prices, multiplier, cents, floor, fee_rate) | 40 | finite, >= 0     |

Ids the ledger derives from a caller's (``<id>:fee``, ``reserve:<id>:customer``,
``refund:settle:<id>``) fit the transfers' 160-character idempotency column, and a
caller's idempotency id may not have one of their forms (``check_idempotency_id``).
"""

from __future__ import annotations

from decimal import Decimal

from cg_ledger.errors import InvalidArgument, OutOfRange
from cglib.pricing import parse_price

MAX_AMOUNT = 10**15
MAX_COUNTER = 2**63 - 1  # what an int64 column and proto field hold

MAX_ID_LEN = 120
MAX_ACCOUNT_LEN = 80
MAX_OWNER_LEN = 64
MAX_MEMO_LEN = 200
MAX_REASON_LEN = 200
MAX_MODEL_LEN = 120
MAX_PRICE_BOOK_VERSION_LEN = 60
MAX_DECIMAL_LEN = 40
# Room for the longest id the ledger derives from a caller's (see the module docstring).
MAX_DERIVED_ID_LEN = 160


def check_amount(amount: int, field: str = "amount") -> int:
    """A caller's amount: positive (else malformed) and at most ``MAX_AMOUNT``."""
    if amount <= 0:
        raise InvalidArgument(f"{field}: must be positive")
    check_bound(amount, field)
    return amount


def check_bound(amount: int, field: str = "amount") -> int:
    """An amount the ledger computed (a fee, a hold, a charge): at most ``MAX_AMOUNT``."""
    if amount > MAX_AMOUNT:
        # (the value itself is left out: a computed one may have more digits than str() allows)
        raise OutOfRange(f"{field}: above the maximum of {MAX_AMOUNT} for one amount")
    return amount


def check_id(value: str, field: str) -> str:
    if not value or len(value) > MAX_ID_LEN or not value.isprintable():
        raise InvalidArgument(f"{field}: required, printable, at most {MAX_ID_LEN} characters")
    return value


# Ids the ledger derives for its own transfers (from a request id, or a funding's id).
# A caller's idempotency id may not take one: it would block the transfer it names.
DERIVED_PREFIXES = ("reserve:", "settle:", "void:", "expire:", "refund:settle:", "refund:void:", "refund:expire:")
DERIVED_SUFFIXES = (":fee",)


def check_idempotency_id(value: str, field: str = "idempotency_id") -> str:
    check_id(value, field)
    if value.startswith(DERIVED_PREFIXES) or value.endswith(DERIVED_SUFFIXES):
        raise InvalidArgument(f"{field}: {value!r} is of the form the ledger keeps for its own transfers")
    return value


def check_text(value: str, field: str, max_len: int) -> str:
    """Free text the ledger stores as given (optional). PostgreSQL text holds no NUL."""
    if len(value) > max_len:
        raise InvalidArgument(f"{field}: at most {max_len} characters, got {len(value)}")
    if "\x00" in value:
        raise InvalidArgument(f"{field}: must not contain NUL characters")
    return value


def decimal_or_invalid(raw: str, field: str, default: str = "") -> Decimal:
    """A decimal the ledger may store as text (finite, >= 0, at most 40 characters as
    given and as stored)."""
    raw = raw or default
    if len(raw) > MAX_DECIMAL_LEN:
        raise InvalidArgument(f"{field}: at most {MAX_DECIMAL_LEN} characters, got {len(raw)}")
    try:
        value = parse_price(raw, field)
    except ValueError as e:
        raise InvalidArgument(str(e)) from e
    if len(str(value)) > MAX_DECIMAL_LEN:
        raise InvalidArgument(f"{field}: at most {MAX_DECIMAL_LEN} characters")
    return value

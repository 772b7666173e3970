"""Field checks for everything a tenant may send. Each raises ``InvalidArgument``
naming the field, before anything is written."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from cg_keys.errors import InvalidArgument

MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_MODELS = 100
MAX_DOMAINS = 100
MAX_BUDGET_CREDITS = 1_000_000_000  # $10M on one key
MAX_RATE = 10_000_000
MAX_DECIMAL = Decimal(1_000_000)
MAX_IDEMPOTENCY_KEY = 80
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def name(value: str, field: str = "name") -> str:
    value = value.strip()
    if not value:
        raise InvalidArgument(field, "required")
    if len(value) > MAX_NAME or not value.isprintable():
        raise InvalidArgument(field, f"at most {MAX_NAME} printable characters")
    return value


def description(value: str) -> str:
    if len(value) > MAX_DESCRIPTION or "\x00" in value:  # PostgreSQL text holds no NUL
        raise InvalidArgument("description", f"at most {MAX_DESCRIPTION} characters, no NUL")
    return value.strip()


def external_ref(value: str) -> str:
    """A partner's reference in the caller's own system (optional)."""
    if len(value) > MAX_NAME or (value and not value.isprintable()):
        raise InvalidArgument("external_ref", f"at most {MAX_NAME} printable characters")
    return value


def idempotency_key(value: str, required: bool = True) -> str:
    """A caller's idempotency key. Required by the calls that move money or make a
    secret: without one a retry could not be told from a second call."""
    if (required and not value) or len(value) > MAX_IDEMPOTENCY_KEY or not value.isprintable():
        rule = f"at most {MAX_IDEMPOTENCY_KEY} printable characters"
        raise InvalidArgument("idempotency_key", f"required, {rule}" if required else rule)
    return value


def credits(value: int, field: str, allow_zero: bool = False) -> int:
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidArgument(field, "must be a positive number of credits")
    if value > MAX_BUDGET_CREDITS:
        raise InvalidArgument(field, f"at most {MAX_BUDGET_CREDITS:,} credits")
    return value


def decimal(value: str, field: str, *, positive: bool = False, optional: bool = False) -> str:
    """A decimal string, normalised; ``positive`` refuses zero and below."""
    if not value.strip():
        if optional:
            return ""
        raise InvalidArgument(field, "required")
    try:
        d = Decimal(value.strip())
    except InvalidOperation:
        raise InvalidArgument(field, "not a decimal number") from None
    if not d.is_finite() or d < 0 or (positive and d <= 0) or d > MAX_DECIMAL:
        raise InvalidArgument(field, "must be greater than zero" if positive else "must be zero or more")
    return str(d)


def domain(value: str, field: str) -> str:
    """An exact host (``app.example.com``) or a wildcard (``*.example.com``)."""
    host = value.strip().lower().rstrip(".")
    body = host[2:] if host.startswith("*.") else host
    labels = body.split(".")
    if (
        not body
        or len(body) > 253
        or "*" in body
        or len(labels) < 2
        or not all(_LABEL.match(label) for label in labels)
    ):
        raise InvalidArgument(field, f"not a host or *.wildcard host: {value[:100]!r}")
    return host


def domains(values: list[str]) -> list[str]:
    if len(values) > MAX_DOMAINS:
        raise InvalidArgument("allowed_domains", f"at most {MAX_DOMAINS}")
    return list(dict.fromkeys(domain(v, f"allowed_domains[{i}]") for i, v in enumerate(values)))


def rate(value: int, field: str) -> int:
    if value < 0 or value > MAX_RATE:
        raise InvalidArgument(field, f"between 0 (no limit) and {MAX_RATE:,}")
    return value


def expiry(value: int, now: int) -> int:
    if value < 0 or (value and value <= now) or value > now + 10 * 365 * 86400:
        raise InvalidArgument("expires_at_unix", "0 (never) or a time in the next ten years")
    return value

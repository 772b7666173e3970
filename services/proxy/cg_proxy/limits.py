"""Rate limits as the client sees them: OpenAI's ``x-ratelimit-*`` headers and 429.

The ledger checks a key's RPM/TPM in the same transaction as its reservation (so the
limits hold across proxy replicas) and returns the window's state; this module only
renders it: on every metered response of a limited key, and as a 429 with
``Retry-After`` when the reservation was refused.
"""

from __future__ import annotations

import math

from cg_proxy import errors
from creditgate.keys.v1 import keys_pb2
from creditgate.ledger.v1 import ledger_pb2


def rate_limit_of(key: keys_pb2.Key) -> ledger_pb2.RateLimit | None:
    if key.rpm_limit <= 0 and key.tpm_limit <= 0:
        return None
    return ledger_pb2.RateLimit(key=key.id, rpm=max(key.rpm_limit, 0), tpm=max(key.tpm_limit, 0))


def duration(ms: int) -> str:
    """OpenAI's reset format: ``120ms``, ``1.5s``, ``6m0s``."""
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, rest = divmod(ms, 60_000)
    return f"{minutes}m" + (f"{rest / 1000:.3f}".rstrip("0").rstrip(".") or "0") + "s"


def headers(state: ledger_pb2.RateLimitState) -> dict[str, str]:
    out: dict[str, str] = {}
    if state.limit_requests:
        out["x-ratelimit-limit-requests"] = str(state.limit_requests)
        out["x-ratelimit-remaining-requests"] = str(state.remaining_requests)
        out["x-ratelimit-reset-requests"] = duration(state.reset_requests_ms)
    if state.limit_tokens:
        out["x-ratelimit-limit-tokens"] = str(state.limit_tokens)
        out["x-ratelimit-remaining-tokens"] = str(state.remaining_tokens)
        out["x-ratelimit-reset-tokens"] = duration(state.reset_tokens_ms)
    return out


def refused(state: ledger_pb2.RateLimitState, model: str) -> errors.APIError:
    if state.limited_by == "tokens":
        what, limit = "tokens per min (TPM)", state.limit_tokens
    else:
        what, limit = "requests per min (RPM)", state.limit_requests
    wait = duration(state.retry_after_ms)
    return errors.APIError(
        429,
        f"Rate limit reached for {model} on {what} for this API key: Limit {limit}. Please try again in {wait}.",
        type=state.limited_by or "requests",
        code="rate_limit_exceeded",
        headers={**headers(state), "Retry-After": str(max(1, math.ceil(state.retry_after_ms / 1000)))},
    )

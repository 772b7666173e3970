"""Per-key requests and tokens per minute, over a sliding 60-second window.

The window is the key's reservations of the last 60 s (``reservations.rate_key``):
its requests are the rows, its tokens their settled input + output tokens (a request
still in flight counts as a request, and its tokens once settled). The reservation
that asks is refused when the key already has ``rpm`` requests in the window, or has
used ``tpm`` tokens or more. Checking and holding happen in one transaction under the
payer's row lock (SQLite: the write lock), so a limit of 60 is 60 in total however
many proxies serve the key. A window holds at most ``rpm`` rows; with only a TPM limit
it holds every request of the last minute, so TPM alone suits modest request rates.
"""

from __future__ import annotations

from dataclasses import dataclass

from cg_ledger.errors import InvalidArgument

WINDOW_MS = 60_000
MAX_LIMIT = 10**12


@dataclass(frozen=True)
class RateLimit:
    key: str
    rpm: int
    tpm: int

    @classmethod
    def parse(cls, key: str, rpm: int, tpm: int) -> RateLimit | None:
        if rpm < 0 or tpm < 0 or rpm > MAX_LIMIT or tpm > MAX_LIMIT:
            raise InvalidArgument(f"rate_limit: rpm and tpm between 0 and {MAX_LIMIT}")
        if not rpm and not tpm:
            return None
        if not key or len(key) > 80 or not key.isprintable():
            raise InvalidArgument("rate_limit.key: 1 to 80 printable characters")
        return cls(key, rpm, tpm)


@dataclass(frozen=True)
class RateState:
    limited: bool = False
    limited_by: str = ""
    retry_after_ms: int = 0
    limit_requests: int = 0
    remaining_requests: int = 0
    reset_requests_ms: int = 0
    limit_tokens: int = 0
    remaining_tokens: int = 0
    reset_tokens_ms: int = 0


def evaluate(limit: RateLimit, window: list[tuple[int, int]], now_ms: int) -> RateState:
    """The state for one more request, given the window's (created_at_ms, tokens) oldest first."""
    count = len(window)
    used = sum(tokens for _, tokens in window)

    def leaves_in(t: int) -> int:
        return max(t + WINDOW_MS - now_ms, 1)

    limited_by, retry = "", 0
    if limit.rpm and count >= limit.rpm:
        # count - rpm + 1 requests must leave the window: the (count - rpm)-th oldest last.
        limited_by, retry = "requests", leaves_in(window[count - limit.rpm][0])
    elif limit.tpm and used >= limit.tpm:
        left = used
        for t, tokens in window:
            left -= tokens
            if left < limit.tpm:
                limited_by, retry = "tokens", leaves_in(t)
                break
    admitted = 0 if limited_by else 1
    first_tokened = next((t for t, tokens in window if tokens), None)
    return RateState(
        limited=bool(limited_by),
        limited_by=limited_by,
        retry_after_ms=retry,
        limit_requests=limit.rpm,
        remaining_requests=max(limit.rpm - count - admitted, 0) if limit.rpm else 0,
        reset_requests_ms=leaves_in(window[0][0] if window else now_ms) if limit.rpm else 0,
        limit_tokens=limit.tpm,
        remaining_tokens=max(limit.tpm - used, 0) if limit.tpm else 0,
        reset_tokens_ms=leaves_in(first_tokened) if limit.tpm and first_tokened is not None else 0,
    )

"""Per-key requests and tokens per minute, over a sliding 60-second window.

The window is a list of entries ``(end_ms, requests, tokens)``, each counted while its
END is later than now - 60 s:

- a reservation with a rate limit (``reservations.rate_key``): 1 request, ending at its
  creation (the request goes upstream right after), with its settled tokens;
- a request slot grant (``rate_slots``, taken with a lease): ``k`` requests that its
  proxy may start until the grant's deadline ``t + SLOT_TTL_MS``, ending at that deadline;
- a request settled from a lease: 0 requests (its slot counted it), its tokens, at the
  time the request was made.

The rule, the same for a reservation and a slot grant: the window's requests plus the
new ones at most ``rpm``, and the window's tokens below ``tpm``. Whatever mix of
replicas, slots and reservations, no 60 s window of ACTUAL request times then holds more
than ``rpm`` requests: take any window (s, s + 60 s] and, among the grants and
reservations whose requests start in it, the one decided last, at g. Each of them starts
at some u with s < u <= s + 60 s and was decided at or before its start, so g <= s + 60 s;
and each ends at or after its start (a slot by its deadline, a reservation at once), so
its end >= u > s >= g - 60 s: every one of them was in g's window, or is g's own, and g
admitted at most ``rpm`` in all. Returned slots (never used) only lower actual counts.
(docs/leases.md has it with the proxy's half: it stops using a slot a margin before the
deadline, measured from when it sent the request that got it.)

Checking and holding happen in one transaction under the payer's row lock (SQLite: the
write lock), so a limit of 60 is 60 in total however many proxies serve the key. With
only a TPM limit the window holds every request of the last minute, so TPM alone suits
modest request rates.
"""

from __future__ import annotations

from dataclasses import dataclass

from cg_ledger.errors import InvalidArgument

WINDOW_MS = 60_000
MAX_LIMIT = 10**12
# How long a granted request slot stays usable: short, as a slot counts in the window
# until its deadline whether it was used or not.
SLOT_TTL_MS = 3_000
# A grant is at most this fraction of the requests left in the window (as for money,
# ``leases.LEASE_FRACTION``), so the last requests of a window stay usable from any replica.
SLOT_FRACTION = 8

Window = list[tuple[int, int, int]]  # (end_ms, requests, tokens), oldest end first


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


def evaluate(limit: RateLimit, window: Window, now_ms: int, admitted: int = 1) -> RateState:
    """The state for ``admitted`` more requests (a reservation: 1), given the window's
    entries counted at ``now_ms`` (``Window``, oldest end first)."""
    count = sum(n for _, n, _ in window)
    used = sum(tokens for _, _, tokens in window)

    def leaves_in(t: int) -> int:
        return max(t + WINDOW_MS - now_ms, 1)

    limited_by, retry = "", 0
    if limit.rpm and count + max(admitted, 1) > limit.rpm:
        # count + 1 - rpm requests must leave the window: retry when the entry that
        # takes the total that far has ended.
        must_leave, left = count + 1 - limit.rpm, 0
        for t, n, _ in window:
            left += n
            if left >= must_leave:
                limited_by, retry = "requests", leaves_in(t)
                break
    if not limited_by and limit.tpm and used >= limit.tpm:
        left = used
        for t, _, tokens in window:
            left -= tokens
            if left < limit.tpm:
                limited_by, retry = "tokens", leaves_in(t)
                break
    admitted = 0 if limited_by else admitted
    first_tokened = next((t for t, _, tokens in window if tokens), None)
    first_counted = next((t for t, n, _ in window if n), now_ms)
    return RateState(
        limited=bool(limited_by),
        limited_by=limited_by,
        retry_after_ms=retry,
        limit_requests=limit.rpm,
        remaining_requests=max(limit.rpm - count - admitted, 0) if limit.rpm else 0,
        reset_requests_ms=leaves_in(first_counted) if limit.rpm else 0,
        limit_tokens=limit.tpm,
        remaining_tokens=max(limit.tpm - used, 0) if limit.tpm else 0,
        reset_tokens_ms=leaves_in(first_tokened) if limit.tpm and first_tokened is not None else 0,
    )


def slots(limit: RateLimit, window: Window, now_ms: int, want: int, least: int) -> tuple[int, RateState]:
    """How many request slots a lease gets now, and the window's state counting them:
    ``want``, at most ``1/SLOT_FRACTION`` of the requests left, at least ``least`` (1
    near the end of a window, so its last request stays grantable to any replica), and
    none when not even ``least`` is left or the tokens are used up (the proxy then falls
    back to a reservation, which answers the refusal)."""
    if want <= 0:
        return 0, evaluate(limit, window, now_ms, admitted=0)
    least = max(min(least, want), 1)
    k = want
    if limit.rpm:
        left = limit.rpm - sum(n for _, n, _ in window)
        k = min(want, max(left, 0) // SLOT_FRACTION)
        if k < least:
            k = least if left >= least else 0
    if k <= 0:
        return 0, evaluate(limit, window, now_ms, admitted=max(least, 1))
    state = evaluate(limit, window, now_ms, admitted=k)
    return (0, state) if state.limited else (k, state)

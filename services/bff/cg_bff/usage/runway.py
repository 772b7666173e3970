"""Runway: at a key's recent rate, when its budget runs out, or when auto top-up fires.

Inputs: the key as keys' ``GetKey`` reads it (``settled_remaining_ucr``: funded -
refunded - settled spend, what the worker's rules look at; ``min_request_ucr``; the
auto top-up settings) and what the key spent in the read model over the look-back
window. Definitions:

    window   = min(24 h, max(1 h, the key's age))   ending now
    rate     = spent in the window / window         (settled requests' cost_ucr)
    line     = ceil(auto_topup.threshold_usd × 10^8)  when auto top-up is on and the
               settled remaining is at or above it    -> event "auto_topup"
             = min_request_ucr                         otherwise -> event "exhausted"
    to_spend = settled_remaining - line + 1 µcr     (both rules fire when the settled
                                                     remaining is *below* the line)
    at       = now + to_spend / rate                 (rounded down to the ms)
    in_days  = (at - now) / 1 day                    (1 place, half-even)

No answer (``event`` null, ``reason`` says why): a customer-created key
(``pay_as_you_go``: it has no budget, its partner's balance pays), a key that is
revoked, suspended, expired or already exhausted (its status), or one that spent nothing
in the window (``no_recent_usage``). The rate is the settled spend the read model has
seen: a request in flight counts once it settles.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Literal

from cglib.money import UCR_PER_USD
from creditgate.keys.v1 import keys_pb2 as kpb

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WINDOW_MS = 24 * HOUR_MS
MIN_WINDOW_MS = HOUR_MS
Event = Literal["auto_topup", "exhausted"]
_STATUS_REASONS = {
    kpb.KEY_STATUS_REVOKED: "revoked",
    kpb.KEY_STATUS_SUSPENDED: "suspended",
    kpb.KEY_STATUS_EXPIRED: "expired",
    kpb.KEY_STATUS_EXHAUSTED: "exhausted",
}


@dataclass(frozen=True)
class Runway:
    key_id: str
    event: Event | None
    at_ms: int | None
    in_days: Decimal | None
    reason: str | None  # why there is no event
    settled_remaining_ucr: int
    line_ucr: int | None
    spent_ucr: int
    window_ms: int
    rate_ucr_per_day: int


def window_start_ms(key: kpb.Key, now_ms: int) -> int:
    age_ms = max(now_ms - key.created_at_unix * 1000, 0)
    return now_ms - min(WINDOW_MS, max(MIN_WINDOW_MS, age_ms))


def _threshold_ucr(topup: kpb.AutoTopUp) -> int | None:
    try:
        threshold = Decimal(topup.threshold_usd)
    except InvalidOperation:
        return None
    if not threshold.is_finite() or threshold <= 0:
        return None
    return int((threshold * UCR_PER_USD).to_integral_value(ROUND_CEILING))


def runway(detail: kpb.KeyDetail, spent_ucr: int, now_ms: int) -> Runway:
    key = detail.key
    window_ms = now_ms - window_start_ms(key, now_ms)
    settled = detail.settled_remaining_ucr
    rate_per_day = spent_ucr * DAY_MS // window_ms

    def none(reason: str) -> Runway:
        return Runway(key.id, None, None, None, reason, settled, None, spent_ucr, window_ms, rate_per_day)

    if key.kind != "partner":
        return none("pay_as_you_go")
    if key.status in _STATUS_REASONS:
        return none(_STATUS_REASONS[key.status])
    threshold = _threshold_ucr(key.auto_topup) if key.auto_topup.enabled else None
    event: Event
    if threshold is not None and settled >= threshold:
        event, line = "auto_topup", threshold
    else:
        event, line = "exhausted", detail.min_request_ucr
    if settled < line:
        return none("exhausted")
    if spent_ucr <= 0:
        return none("no_recent_usage")
    to_spend = settled - line + 1
    ahead_ms = to_spend * window_ms // spent_ucr
    in_days = (Decimal(ahead_ms) / DAY_MS).quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN)
    return Runway(key.id, event, now_ms + ahead_ms, in_days, None, settled, line, spent_ucr, window_ms, rate_per_day)

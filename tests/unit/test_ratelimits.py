"""The sliding-window arithmetic behind x-ratelimit-* (the ledger's ratelimits module)."""

from __future__ import annotations

import pytest

from cg_ledger.errors import InvalidArgument
from cg_ledger.ratelimits import SLOT_TTL_MS, WINDOW_MS, RateLimit, evaluate, slots
from cg_proxy.limits import duration

NOW = 1_000_000


def test_no_limits_means_no_check():
    assert RateLimit.parse("k", 0, 0) is None


@pytest.mark.parametrize("key, rpm, tpm", [("", 1, 0), ("k" * 81, 1, 0), ("k", -1, 0), ("k", 0, -5)])
def test_bad_limits_are_refused(key, rpm, tpm):
    with pytest.raises(InvalidArgument):
        RateLimit.parse(key, rpm, tpm)


def test_requests_fill_the_window_then_wait_for_the_oldest():
    limit = RateLimit("k", rpm=3, tpm=0)
    assert evaluate(limit, [], NOW).remaining_requests == 2
    assert evaluate(limit, [], NOW).reset_requests_ms == WINDOW_MS
    window = [(NOW - 50_000, 1, 0), (NOW - 20_000, 1, 0)]
    state = evaluate(limit, window, NOW)
    assert not state.limited and state.remaining_requests == 0 and state.reset_requests_ms == 10_000
    window.append((NOW - 1_000, 1, 0))
    refused = evaluate(limit, window, NOW)
    assert refused.limited and refused.limited_by == "requests"
    assert refused.retry_after_ms == 10_000  # when the oldest leaves, one slot is free
    assert refused.remaining_requests == 0


def test_a_lowered_limit_waits_for_enough_requests_to_leave():
    window = [(NOW - 50_000, 1, 0), (NOW - 40_000, 1, 0), (NOW - 30_000, 1, 0)]
    refused = evaluate(RateLimit("k", rpm=2, tpm=0), window, NOW)
    assert refused.limited and refused.retry_after_ms == 20_000  # two must leave: the second oldest last


def test_retry_after_is_when_a_request_is_admitted_again_at_most_the_window_and_a_slots_life():
    """A full window of slots granted now (the worst case) reopens when the grant's
    deadline is a minute old: Retry-After says exactly that, up to 63 s. Saying 60 would
    send a client that obeys it into another 429."""
    limit = RateLimit("k", rpm=60, tpm=0)
    window: list[tuple[int, int, int]] = []
    granted = 0
    while True:
        k, _ = slots(limit, window, NOW, want=100, least=1)
        if not k:
            break
        window.append((NOW + SLOT_TTL_MS, k, 0))  # what the ledger records: counted until its deadline
        granted += k
    assert granted == 60
    refused = evaluate(limit, window, NOW)
    assert refused.limited and refused.retry_after_ms == WINDOW_MS + SLOT_TTL_MS
    assert refused.remaining_requests == 0
    later = NOW + refused.retry_after_ms
    assert evaluate(limit, window, later - 1).limited
    # at ``later`` the grants' deadlines are a minute old: out of the window the ledger reads
    live = [entry for entry in window if entry[0] > later - WINDOW_MS]
    assert not evaluate(limit, live, later).limited


def test_tokens_count_what_was_settled():
    limit = RateLimit("k", rpm=0, tpm=100)
    window = [(NOW - 59_000, 1, 60), (NOW - 30_000, 1, 0), (NOW - 10_000, 1, 30)]
    state = evaluate(limit, window, NOW)
    assert not state.limited and state.remaining_tokens == 10 and state.reset_tokens_ms == 1_000
    assert state.limit_requests == 0 and state.remaining_requests == 0
    window.append((NOW - 5_000, 1, 20))
    refused = evaluate(limit, window, NOW)
    assert refused.limited and refused.limited_by == "tokens" and refused.remaining_tokens == 0
    assert refused.retry_after_ms == 1_000  # once the 60 leave, 50 < 100


def test_requests_are_checked_before_tokens():
    refused = evaluate(RateLimit("k", rpm=1, tpm=10), [(NOW - 1, 1, 50)], NOW)
    assert refused.limited_by == "requests"


@pytest.mark.parametrize(
    "ms, text",
    [
        (0, "0ms"),
        (120, "120ms"),
        (1000, "1s"),
        (1500, "1.5s"),
        (59_999, "59.999s"),
        (60_000, "1m0s"),
        (360_000, "6m0s"),
        (61_250, "1m1.25s"),
    ],
)
def test_reset_durations_read_like_openais(ms, text):
    assert duration(ms) == text

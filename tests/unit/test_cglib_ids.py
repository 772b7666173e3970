"""cglib.ids: random ids of the asked length, over base62, every character equally likely."""

from __future__ import annotations

import collections
import string

from cglib import ids

BASE62 = set(string.ascii_letters + string.digits)


def test_ids_have_the_asked_length_and_only_base62_characters():
    for length in (1, 6, 20, 43, 64):
        value = ids.random_base62(length)
        assert len(value) == length
        assert set(value) <= BASE62
    assert ids.new_id("req").startswith("req_") and len(ids.new_id("req")) == 24


def test_bytes_that_would_favour_some_characters_are_dropped(monkeypatch):
    """256 is not a multiple of 62: bytes 248-255 would make the first 8 characters more
    likely. A draw of only such bytes yields nothing; the id comes from the next draw."""
    draws = iter([bytes(range(248, 256)) * 8, bytes(range(62)) * 2])
    monkeypatch.setattr(ids.os, "urandom", lambda n: next(draws)[:n])
    assert ids.random_base62(20) == (string.ascii_letters + string.digits)[:20]


def test_every_character_is_about_equally_likely():
    counts = collections.Counter("".join(ids.random_base62(64) for _ in range(2_000)))
    assert set(counts) == BASE62
    expected = 64 * 2_000 / 62  # ~2,065 each; 5 sigma is ~±225
    assert all(abs(n - expected) < 300 for n in counts.values()), counts.most_common(3)

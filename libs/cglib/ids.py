"""Identifiers."""

from __future__ import annotations

import os
import string

_ALPHABET = string.ascii_letters + string.digits  # base62
# Bytes below this (4 × 62) map evenly onto the alphabet; the rest are skipped, so every
# character is uniform, as ``secrets.choice`` per character was, from one ``urandom`` call
# (one system call per id instead of one per character: request ids are on the proxy's hot path).
_EVEN_BELOW = 248


def random_base62(length: int) -> str:
    chars: list[str] = []
    while len(chars) < length:
        for b in os.urandom(length + length // 8 + 4):
            if b < _EVEN_BELOW:
                chars.append(_ALPHABET[b % 62])
    return "".join(chars[:length])


def new_id(prefix: str, length: int = 20) -> str:
    """A random id such as ``req_4fG...``; prefixes say what the id names."""
    return f"{prefix}_{random_base62(length)}"

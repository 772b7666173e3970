"""Identifiers."""

from __future__ import annotations

import os
import string

_ALPHABET = string.ascii_letters + string.digits  # base62
# Bytes below this (4 × 62) map evenly onto the alphabet; the rest are dropped, so every
# character is uniform, as ``secrets.choice`` per character was. One ``urandom`` call and
# one ``bytes.translate`` per id, no Python loop over its characters: request ids are on
# the proxy's hot path.
_EVEN_BELOW = 248
_TO_ALPHABET = bytes(ord(_ALPHABET[b % 62]) for b in range(256))
_UNEVEN = bytes(range(_EVEN_BELOW, 256))


def random_base62(length: int) -> str:
    out = b""
    while len(out) < length:
        out += os.urandom(length + length // 8 + 4).translate(_TO_ALPHABET, _UNEVEN)
    return out[:length].decode("ascii")


def new_id(prefix: str, length: int = 20) -> str:
    """A random id such as ``req_4fG...``; prefixes say what the id names."""
    return f"{prefix}_{random_base62(length)}"

"""Identifiers."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits  # base62


def random_base62(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_id(prefix: str, length: int = 20) -> str:
    """A random id such as ``req_4fG...``; prefixes say what the id names."""
    return f"{prefix}_{random_base62(length)}"

"""Virtual key secrets: ``sk-cg-`` + 40 base62 characters, stored only as SHA-256.

The proxy hashes the presented secret and looks the hash up; the secret itself never
reaches a database or a log. Comparing fixed-length hashes by index makes the lookup
independent of how much of a guessed secret is right.
"""

from __future__ import annotations

import hashlib

from cglib.ids import random_base62

PREFIX = "sk-cg-"
RANDOM_CHARS = 40
DISPLAY_CHARS = 12  # "sk-cg-" + 6 characters shown in tables


def new_secret() -> str:
    return PREFIX + random_base62(RANDOM_CHARS)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:DISPLAY_CHARS]


def looks_like_key(secret: str) -> bool:
    return secret.startswith(PREFIX) and len(secret) >= len(PREFIX) + 32 and secret[len(PREFIX) :].isalnum()

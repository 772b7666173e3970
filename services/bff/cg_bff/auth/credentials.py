"""The secrets identity hands out, and how each is kept.

| secret | looks like | kept as |
|---|---|---|
| session id (the ``cg_session`` cookie) | 43 url-safe characters | SHA-256 hex (``user_sessions.id``) |
| CSRF token | 43 url-safe characters | not kept: HMAC-SHA256 of the session id, recomputed |
| invite token | 43 url-safe characters | SHA-256 hex (``invites.token_hash``) |
| management API token | ``cgm_`` + 40 base62 | SHA-256 hex (``api_tokens.token_hash``), 12 characters shown |

Every secret has at least 238 bits of randomness, so a plain SHA-256 (not a slow hash)
is enough to make a stolen table useless, and a lookup by hash compares nothing secret
character by character. The CSRF token is bound to its session (a token from another
session does not match) and needs no storage; it is compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from cglib.ids import random_base62

SESSION_COOKIE = "cg_session"
CSRF_HEADER = "X-CSRF-Token"
API_TOKEN_PREFIX = "cgm_"
API_TOKEN_RANDOM_CHARS = 40
API_TOKEN_DISPLAY_CHARS = 12  # "cgm_" + 8 characters, shown in lists


def now_ms() -> int:
    return int(time.time() * 1000)


def digest(secret: str) -> str:
    """SHA-256 hex: how every secret of ours is stored and looked up."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_session_secret() -> str:
    return secrets.token_urlsafe(32)


def new_invite_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(session_secret: str) -> str:
    mac = hmac.new(session_secret.encode(), b"cg-csrf-v1", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def csrf_matches(session_secret: str, presented: str | None) -> bool:
    if not presented:
        return False
    return hmac.compare_digest(presented.encode(), csrf_token(session_secret).encode())


def new_api_token() -> str:
    return API_TOKEN_PREFIX + random_base62(API_TOKEN_RANDOM_CHARS)


def looks_like_api_token(value: str) -> bool:
    rest = value[len(API_TOKEN_PREFIX) :]
    return (
        value.startswith(API_TOKEN_PREFIX) and len(rest) == API_TOKEN_RANDOM_CHARS and rest.isascii() and rest.isalnum()
    )

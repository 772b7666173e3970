"""Webhook signing secrets: made here, shown to the partner once, kept encrypted.

A secret is ``whsec_`` + base64 of 32 random bytes (Standard Webhooks: 24 to 64 bytes).
The worker must sign with it, so it is stored recoverably, sealed with AES-256-GCM under
the BFF's key ring (``CG_BFF_WEBHOOK_SECRET_KEYS``: comma-separated base64 keys of 32
bytes, the first seals, every one opens, so a new key can be put first and the old one
dropped once every secret was re-sealed or rotated), with the endpoint's id as associated
data (a sealed secret copied onto another endpoint's row does not open). A database dump
alone reveals no secret. Sealed: ``v1.<key id>.<base64url(nonce | ciphertext)>``.

With no key configured (development), a secret is kept as ``plain.<secret>`` and the BFF
says so at start; production must set the key ring. Secrets only leave the BFF to the
worker, over the internal gRPC service (``CG_BFF_INTERNAL_TOKEN``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "whsec_"
SECRET_BYTES = 32
_NONCE_BYTES = 12
KEY_HELP = (
    "each key is 32 random bytes in base64, e.g. "
    "python -c 'import base64, secrets; print(base64.b64encode(secrets.token_bytes(32)).decode())'"
)


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def parse_keys(value: str) -> list[bytes]:
    """The key ring from its setting (empty: none); ``ValueError`` naming what is wrong."""
    keys = []
    for n, text in enumerate(part.strip() for part in value.split(",") if part.strip()):
        try:
            key = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"webhook secret key #{n + 1} is not base64: {KEY_HELP}") from None
        if len(key) != 32:
            raise ValueError(f"webhook secret key #{n + 1} is {len(key)} bytes, not 32: {KEY_HELP}")
        keys.append(key)
    return keys


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


class SecretBox:
    def __init__(self, keys: list[bytes]) -> None:
        self._keys = {_key_id(k): AESGCM(k) for k in keys}
        self._sealing = _key_id(keys[0]) if keys else None

    @property
    def encrypts(self) -> bool:
        return self._sealing is not None

    def seal(self, secret: str, endpoint_id: str) -> str:
        if self._sealing is None:
            return "plain." + secret
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._keys[self._sealing].encrypt(nonce, secret.encode(), endpoint_id.encode())
        return f"v1.{self._sealing}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, sealed: str, endpoint_id: str) -> str:
        """The secret; ``ValueError`` when it cannot be opened (a key missing from the ring)."""
        scheme, _, rest = sealed.partition(".")
        if scheme == "plain":
            return rest
        key_id, _, blob = rest.partition(".")
        aead = self._keys.get(key_id)
        if scheme != "v1" or aead is None:
            raise ValueError(f"the webhook secret was sealed with key {key_id!r}, which is not in the key ring")
        raw = base64.urlsafe_b64decode(blob)
        try:
            return aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], endpoint_id.encode()).decode()
        except InvalidTag:
            raise ValueError("the webhook secret does not open: altered, or sealed for another endpoint") from None

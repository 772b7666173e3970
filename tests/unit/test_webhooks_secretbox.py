"""Webhook signing secrets at rest (cg_bff.webhooks.secretbox): made per the spec, sealed
with AES-256-GCM under the BFF's key ring, bound to their endpoint, readable after the
ring gains a new key; a wrong key in the settings stops the BFF at start."""

from __future__ import annotations

import base64
import secrets

import pytest
from pydantic import ValidationError

from cg_bff.settings import Settings
from cg_bff.webhooks.secretbox import SecretBox, new_secret, parse_keys


def key() -> bytes:
    return secrets.token_bytes(32)


def b64(k: bytes) -> str:
    return base64.b64encode(k).decode()


def test_a_secret_is_whsec_and_32_random_bytes():
    a, b = new_secret(), new_secret()
    assert a.startswith("whsec_") and a != b and len(base64.b64decode(a[6:])) == 32


def test_sealed_secrets_open_for_their_endpoint_only():
    box = SecretBox([key()])
    secret = new_secret()
    sealed = box.seal(secret, "whe_1")
    assert sealed.startswith("v1.") and secret not in sealed and secret[6:] not in sealed
    assert box.open(sealed, "whe_1") == secret
    assert box.seal(secret, "whe_1") != sealed  # a fresh nonce every time
    with pytest.raises(ValueError, match="another endpoint"):
        box.open(sealed, "whe_2")  # copied onto another endpoint's row
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(ValueError):
        box.open(tampered, "whe_1")


def test_a_new_key_seals_and_the_old_one_still_opens():
    old, new = key(), key()
    sealed_old = SecretBox([old]).seal("whsec_x", "whe_1")
    ring = SecretBox([new, old])
    assert ring.open(sealed_old, "whe_1") == "whsec_x"
    sealed_new = ring.seal("whsec_y", "whe_1")
    assert SecretBox([new]).open(sealed_new, "whe_1") == "whsec_y"
    with pytest.raises(ValueError, match="not in the key ring"):
        SecretBox([new]).open(sealed_old, "whe_1")


def test_without_a_key_ring_secrets_are_kept_unsealed():
    box = SecretBox([])
    assert not box.encrypts and box.open(box.seal("whsec_z", "whe_1"), "whe_1") == "whsec_z"


def test_the_key_ring_setting_is_checked_at_start():
    k1, k2 = key(), key()
    assert parse_keys(f"{b64(k1)}, {base64.urlsafe_b64encode(k2).decode().rstrip('=')}") == [k1, k2]
    assert parse_keys("") == []
    Settings(webhook_secret_keys=b64(k1))
    for bad, why in (("not base64!", "not base64"), (b64(secrets.token_bytes(16)), "16 bytes, not 32")):
        with pytest.raises(ValidationError, match=why):
            Settings(webhook_secret_keys=bad)

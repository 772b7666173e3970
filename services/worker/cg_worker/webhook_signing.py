"""Standard Webhooks signatures (https://www.standardwebhooks.com, "Signature scheme").

The content signed is ``<webhook-id>.<webhook-timestamp>.<body>`` (the body's exact bytes);
the key is the secret's base64 after ``whsec_``; the signature is ``v1,`` + base64 of its
HMAC-SHA256. The ``webhook-signature`` header carries one per secret, space-separated (a
rotated-out secret signs beside the new one during its overlap). Written with the
standard library; tests verify it with the reference library (``standardwebhooks``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

PREFIX = "whsec_"


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets),
    }

"""Our webhook signatures (cg_worker.webhook_signing) against the Standard Webhooks
reference library: what we sign verifies; a tampered body, id or timestamp, or another
secret, does not; a rotated-out secret signing beside the new one verifies with either."""

from __future__ import annotations

import base64
import secrets
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from cg_worker.webhook_signing import headers, sign


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


BODY = b'{"id":"key_exhausted:key_abc:1767225600123","type":"key.exhausted","data":{"key_id":"key_abc"}}'
MSG_ID = "key_exhausted:key_abc:1767225600123"


def test_a_signature_verifies_with_the_reference_library():
    secret = new_secret()
    sent = headers([secret], MSG_ID, int(time.time()), BODY)
    assert Webhook(secret).verify(BODY, sent) == {
        "id": MSG_ID,
        "type": "key.exhausted",
        "data": {"key_id": "key_abc"},
    }
    assert sent["webhook-id"] == MSG_ID and sent["webhook-signature"].startswith("v1,")


def test_the_signature_is_the_spec_example():
    # the example of the Standard Webhooks README (secret, id, timestamp, body -> signature)
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


@pytest.mark.parametrize("what", ["body", "id", "timestamp", "secret"])
def test_anything_changed_fails_verification(what):
    secret, other = new_secret(), new_secret()
    now = int(time.time())
    sent = headers([secret], MSG_ID, now, BODY)
    body = BODY
    if what == "body":
        body = BODY.replace(b"key_abc", b"key_abd")
    elif what == "id":
        sent["webhook-id"] = MSG_ID + "x"
    elif what == "timestamp":
        sent["webhook-timestamp"] = str(now - 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(other if what == "secret" else secret).verify(body, sent)


def test_an_old_timestamp_is_refused_by_receivers():
    secret = new_secret()
    sent = headers([secret], MSG_ID, int(time.time()) - 600, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, sent)


def test_during_a_rotation_both_secrets_verify():
    new, old = new_secret(), new_secret()
    sent = headers([new, old], MSG_ID, int(time.time()), BODY)
    assert len(sent["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(BODY, sent)
    Webhook(old).verify(BODY, sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, sent)

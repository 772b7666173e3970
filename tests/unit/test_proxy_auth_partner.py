"""A suspended partner's keys are refused by the proxy (403 ``partner_suspended``), every
one of them, until the partner is resumed; the keys service's ``KeyChanged`` for each
key drops the cached entry, so a change is seen at once, not after the cache TTL."""

from __future__ import annotations

import asyncio

import pytest

from cg_proxy import errors
from cg_proxy.auth import KeyAuthenticator
from cglib.keysecret import new_secret
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2


class FakeKeys:
    """AuthenticateKey answering one key, of a partner in ``partner_state``."""

    def __init__(self, status: int = keys_pb2.KEY_STATUS_ACTIVE) -> None:
        self.calls = 0
        self.status = status
        self.partner_state = keys_pb2.PARTNER_STATUS_ACTIVE

    async def AuthenticateKey(self, request, timeout):
        self.calls += 1
        return keys_pb2.AuthenticateKeyResponse(
            key=keys_pb2.Key(id="key_1", partner_id="ptn_1", status=self.status),
            partner_state=self.partner_state,
        )


def _refusal(auth: KeyAuthenticator, headers: dict[str, str]) -> errors.APIError:
    with pytest.raises(errors.APIError) as e:
        asyncio.run(auth.authenticate(headers))
    return e.value


def test_a_suspended_partners_key_is_refused_until_it_is_resumed():
    stub = FakeKeys()
    auth = KeyAuthenticator(stub, ttl_s=60, timeout_s=1)
    headers = {"authorization": f"Bearer {new_secret()}"}
    assert asyncio.run(auth.authenticate(headers)).key.id == "key_1"

    stub.partner_state = keys_pb2.PARTNER_STATUS_SUSPENDED
    changed = events_pb2.KeyChanged(key_id="key_1", partner_id="ptn_1", change=events_pb2.KEY_CHANGE_UPDATED)
    asyncio.run(auth.on_key_changed(changed.SerializeToString()))
    refusal = _refusal(auth, headers)
    assert (refusal.status, refusal.code, refusal.type) == (403, "partner_suspended", "permission_error")
    assert "suspended" in refusal.message

    stub.partner_state = keys_pb2.PARTNER_STATUS_ACTIVE
    asyncio.run(auth.on_key_changed(changed.SerializeToString()))
    assert asyncio.run(auth.authenticate(headers)).key.id == "key_1"
    assert stub.calls == 3  # each change was read again, at once


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (keys_pb2.KEY_STATUS_REVOKED, (401, "invalid_api_key")),  # a revoked key does not exist, whoever owns it
        (keys_pb2.KEY_STATUS_SUSPENDED, (403, "partner_suspended")),  # the partner's suspension comes first
        (keys_pb2.KEY_STATUS_EXHAUSTED, (403, "partner_suspended")),
    ],
)
def test_the_partners_suspension_in_the_order_of_refusals(status: int, expected: tuple[int, str]):
    stub = FakeKeys(status)
    stub.partner_state = keys_pb2.PARTNER_STATUS_SUSPENDED
    refusal = _refusal(KeyAuthenticator(stub, ttl_s=60, timeout_s=1), {"authorization": f"Bearer {new_secret()}"})
    assert (refusal.status, refusal.code) == expected

"""The proxy decides expiry against the wall clock on every request, cached key or
not: a key cached while active is refused 403 ``key_expired`` from its expiry on."""

from __future__ import annotations

import asyncio
import time

import pytest

from cg_proxy import errors
from cg_proxy.auth import KeyAuthenticator, expired
from cglib.keysecret import new_secret
from creditgate.keys.v1 import keys_pb2


class FakeKeys:
    """AuthenticateKey answering an active key that expires at ``expires_at_unix``."""

    def __init__(self, expires_at_unix: int) -> None:
        self.calls = 0
        self.expires_at_unix = expires_at_unix

    async def AuthenticateKey(self, request, timeout):
        self.calls += 1
        return keys_pb2.AuthenticateKeyResponse(
            key=keys_pb2.Key(id="key_1", status=keys_pb2.KEY_STATUS_ACTIVE, expires_at_unix=self.expires_at_unix)
        )


def test_expired_is_at_the_instant_and_never_for_no_expiry():
    key = keys_pb2.Key(expires_at_unix=100)
    assert not expired(key, 99.999) and expired(key, 100) and expired(key, 100.5)
    assert not expired(keys_pb2.Key(expires_at_unix=0), time.time())


def test_a_cached_key_is_refused_from_its_expiry_on():
    expires = int(time.time()) + 1
    stub = FakeKeys(expires)
    auth = KeyAuthenticator(stub, ttl_s=60, timeout_s=1)
    headers = {"authorization": f"Bearer {new_secret()}"}

    async def run():
        assert (await auth.authenticate(headers)).key.id == "key_1"
        await asyncio.sleep(max(expires - time.time(), 0) + 0.01)
        with pytest.raises(errors.APIError) as e:
            await auth.authenticate(headers)
        return e.value

    refusal = asyncio.run(run())
    assert (refusal.status, refusal.code) == (403, "key_expired")
    assert stub.calls == 1  # decided on the cached entry, without asking keys again

"""A key changed while the proxy was looking it up: the answer in flight was read before the
change, so it must not be cached. Otherwise the key's ``KeyChanged`` has already come and
gone and the stale answer (an active key that was just revoked) serves every request for
the whole cache TTL (found by the cluster fault run, tests/e2e/test_cluster_faults.py)."""

from __future__ import annotations

import asyncio

import pytest

from cg_proxy import errors
from cg_proxy.auth import KeyAuthenticator
from cglib.keysecret import new_secret
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2

REVOKED = events_pb2.KeyChanged(key_id="key_1", partner_id="ptn_1", change=events_pb2.KEY_CHANGE_REVOKED)


class SlowKeys:
    """AuthenticateKey that read the key while it was active, and answers once released."""

    def __init__(self) -> None:
        self.calls = 0
        self.status = keys_pb2.KEY_STATUS_ACTIVE
        self.release = asyncio.Event()

    async def AuthenticateKey(self, request, timeout):
        self.calls += 1
        status = self.status  # read now, answered later
        if self.calls == 1:
            await self.release.wait()
        return keys_pb2.AuthenticateKeyResponse(key=keys_pb2.Key(id="key_1", partner_id="ptn_1", status=status))


async def test_a_lookup_in_flight_across_a_revoke_is_not_cached():
    keys = SlowKeys()
    auth = KeyAuthenticator(keys, ttl_s=60, timeout_s=1)
    headers = {"authorization": f"Bearer {new_secret()}"}
    in_flight = asyncio.create_task(auth.authenticate(headers))
    await asyncio.sleep(0.01)  # the lookup is out, with the key still active

    keys.status = keys_pb2.KEY_STATUS_REVOKED  # revoked, and its event arrives
    await auth.on_key_changed(REVOKED.SerializeToString())
    keys.release.set()
    assert (await in_flight).key.id == "key_1"  # a request that came before the revoke

    with pytest.raises(errors.APIError) as refused:  # the next one is looked up again: refused
        await auth.authenticate(headers)
    assert (refused.value.status, refused.value.code) == (401, "invalid_api_key")
    assert keys.calls == 2


async def test_a_lookup_that_no_change_crossed_is_cached():
    keys = SlowKeys()
    keys.release.set()
    auth = KeyAuthenticator(keys, ttl_s=60, timeout_s=1)
    headers = {"authorization": f"Bearer {new_secret()}"}
    for _ in range(3):
        await auth.authenticate(headers)
    assert keys.calls == 1


async def test_a_reconnected_bus_drops_every_cached_key_and_every_lookup_in_flight():
    """Key changes published while the proxy's NATS connection was down never arrive: after
    a reconnection every key is looked up again (a revoke missed meanwhile is seen), and a
    lookup that was in flight across the reconnection is not cached."""
    keys = SlowKeys()
    auth = KeyAuthenticator(keys, ttl_s=60, timeout_s=1)
    cached, in_flight_headers = ({"authorization": f"Bearer {new_secret()}"} for _ in range(2))
    keys.release.set()
    await auth.authenticate(cached)  # call 1: cached for 60 s
    keys.release.clear()
    keys.calls = 0
    in_flight = asyncio.create_task(auth.authenticate(in_flight_headers))  # call 1 again: held
    await asyncio.sleep(0.01)

    keys.status = keys_pb2.KEY_STATUS_REVOKED  # revoked while the bus was down: no event
    auth.forget_all()  # the bus reconnected
    keys.release.set()
    assert (await in_flight).key.id == "key_1"
    for headers in (cached, in_flight_headers):
        with pytest.raises(errors.APIError) as refused:
            await auth.authenticate(headers)
        assert refused.value.code == "invalid_api_key"
    assert keys.calls == 3


async def test_requests_that_miss_together_share_one_lookup():
    """A busy key's entry expires: the requests that miss meanwhile wait for one lookup
    instead of each asking the keys service; one of them leaving does not fail the others."""
    keys = SlowKeys()
    auth = KeyAuthenticator(keys, ttl_s=60, timeout_s=1)
    headers = {"authorization": f"Bearer {new_secret()}"}
    waiting = [asyncio.create_task(auth.authenticate(headers)) for _ in range(20)]
    await asyncio.sleep(0.01)
    waiting[0].cancel()  # the first caller's client went away
    keys.release.set()
    done = await asyncio.gather(*waiting[1:])
    assert {a.key.id for a in done} == {"key_1"} and keys.calls == 1
    await auth.authenticate(headers)  # and the answer is cached
    assert keys.calls == 1


async def test_a_request_after_a_change_does_not_join_a_lookup_from_before_it():
    keys = SlowKeys()
    auth = KeyAuthenticator(keys, ttl_s=60, timeout_s=1)
    headers = {"authorization": f"Bearer {new_secret()}"}
    before = asyncio.create_task(auth.authenticate(headers))
    await asyncio.sleep(0.01)  # its lookup read the key while active
    keys.status = keys_pb2.KEY_STATUS_REVOKED
    await auth.on_key_changed(REVOKED.SerializeToString())
    after = asyncio.create_task(auth.authenticate(headers))  # a lookup of its own: refused
    keys.release.set()
    assert (await before).key.id == "key_1"
    with pytest.raises(errors.APIError) as refused:
        await after
    assert refused.value.status == 401 and keys.calls == 2

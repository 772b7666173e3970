"""Key changes reach every proxy replica through NATS, well inside the cache TTL."""

from __future__ import annotations

import time

import httpx
import pytest

from cg_devstack import Stack
from cg_devstack.seed import Seeder
from creditgate.keys.v1 import keys_pb2 as pb
from helpers import eventually

BODY = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def status(url: str, secret: str) -> int:
    return httpx.post(
        f"{url}/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {secret}"}, timeout=10
    ).status_code


@pytest.fixture(scope="module")
def replica(stack: Stack):
    proc, url = stack.start_replica("proxy", "proxy-2")
    yield url
    proc.stop()


@pytest.mark.parametrize("change", ["regenerate", "revoke", "suspend"])
def test_a_changed_key_fails_on_a_second_replica_within_one_second(stack, seeder: Seeder, replica, change):
    key = seeder.funded_key(seeder.partner(f"replicas-{change}", credits=100), 10, ["gpt-4o-mini"])
    actor = pb.Actor(partner_id=key.partner_id)
    # both replicas have the key cached (the cache TTL is 5 s)
    assert status(stack.proxy_url, key.secret) == 200 and status(replica, key.secret) == 200
    start = time.monotonic()
    if change == "regenerate":
        seeder.keys.RegenerateKey(
            pb.RegenerateKeyRequest(actor=actor, key_id=key.key_id, idempotency_key=f"rotate-{key.key_id}"), timeout=5
        )
    elif change == "revoke":
        seeder.keys.RevokeKey(pb.RevokeKeyRequest(actor=actor, key_id=key.key_id), timeout=5)
    else:
        seeder.keys.SuspendKey(pb.SuspendKeyRequest(actor=actor, key_id=key.key_id, note="test"), timeout=5)
    expected = 403 if change == "suspend" else 401
    eventually(lambda: status(replica, key.secret) == expected, timeout_s=1.0, what=f"{change} seen by replica 2")
    elapsed = time.monotonic() - start
    assert status(stack.proxy_url, key.secret) == expected
    print(f"{change}: replica 2 refused the key after {elapsed * 1000:.0f} ms")


def test_last_used_is_kept_from_usage_events(stack, seeder: Seeder):
    key = seeder.funded_key(seeder.partner("last-used", credits=100), 10, ["gpt-4o-mini"])
    actor = pb.Actor(partner_id=key.partner_id)
    assert seeder.keys.GetKey(pb.GetKeyRequest(actor=actor, key_id=key.key_id), timeout=5).key.last_used_unix == 0
    before = int(time.time())
    assert status(stack.proxy_url, key.secret) == 200

    def last_used():
        return seeder.keys.GetKey(pb.GetKeyRequest(actor=actor, key_id=key.key_id), timeout=5).key.last_used_unix

    assert eventually(last_used, what="last used") >= before

"""What a key is refused, and when, over the whole stack on SQLite and PostgreSQL.

- **Expiry at the instant, on every replica**: a key cached by two proxies is refused
  403 ``key_expired`` from its expiry on, though the cached entries are seconds from
  their TTL, and nothing is billed for a request made after it.
- **The last credit is usable**: a key serves every request it can afford; one whose
  hold it cannot cover is 429 ``insufficient_quota`` (the ledger's reservation), and
  the key is never 403 ``key_exhausted`` while its settled remaining still pays for
  its cheapest request.
"""

from __future__ import annotations

import time

import httpx
import pytest

from cg_devstack import Stack
from cg_devstack.seed import Seeder
from cglib.money import UCR_PER_CREDIT as CREDIT
from creditgate.keys.v1 import keys_pb2 as pb
from helpers import eventually, expected_cost_ucr, quiet_balance

CHEAP = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
# gpt-4o at $2.50 per 1M input tokens: ~600 tokens of prompt hold and cost ~0.15 credits
PRICEY = {"model": "gpt-4o", "max_tokens": 16, "messages": [{"role": "user", "content": "word " * 600}]}


@pytest.fixture(scope="module")
def replica(stack: Stack):
    proc, url = stack.start_replica("proxy", "proxy-2")
    yield url
    proc.stop()


def post(url: str, secret: str, body: dict) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    )


def error_code(r: httpx.Response) -> str:
    return r.json()["error"]["code"] if r.status_code >= 400 else ""


def detail(seeder: Seeder, partner_id: str, key_id: str) -> pb.KeyDetail:
    return seeder.keys.GetKey(pb.GetKeyRequest(actor=pb.Actor(partner_id=partner_id), key_id=key_id), timeout=5)


def test_an_expired_key_is_refused_at_its_expiry_on_every_replica(stack: Stack, seeder: Seeder, replica):
    partner = seeder.partner("expiry-instant", credits=100)
    expires = int(time.time()) + 3
    key = seeder.funded_key(partner, 10, ["gpt-4o-mini"], name="expiring", expires_at_unix=expires)
    urls = [stack.proxy_url, replica]
    for url in urls:  # both replicas cache the key now, for the next 5 s (past the expiry)
        assert post(url, key.secret, CHEAP).status_code == 200
    before = quiet_balance(seeder, key.account)

    seen: list[tuple[float, str, int, str, int]] = []  # (sent at, replica, status, code, cost)
    i = 0
    while time.time() < expires + 1.0:
        url = urls[i % 2]
        i += 1
        sent = time.time()
        r = post(url, key.secret, CHEAP)
        cost = 0
        if r.status_code == 200:
            usage = r.json()["usage"]
            cost = expected_cost_ucr("gpt-4o-mini", usage["prompt_tokens"], usage["completion_tokens"])
        seen.append((sent, url, r.status_code, error_code(r), cost))

    late = [s for s in seen if s[0] >= expires + 0.05]
    assert late and {s[1] for s in late} == set(urls)
    wrong = [(round(s[0] - expires, 3), s[1], s[2], s[3]) for s in late if (s[2], s[3]) != (403, "key_expired")]
    assert not wrong, f"served or refused otherwise after the expiry (seconds after it, replica, status, code): {wrong}"
    assert any(s[2] == 200 for s in seen if s[0] < expires - 0.05), "the key never worked before its expiry"
    # billed: exactly the requests answered; nothing for any refused one
    after = quiet_balance(seeder, key.account)
    assert before - after == sum(s[4] for s in seen)
    assert detail(seeder, partner, key.key_id).key.status == pb.KEY_STATUS_EXPIRED


def test_a_small_key_serves_until_a_request_is_unaffordable_and_is_never_exhausted_early(stack: Stack, seeder: Seeder):
    partner = seeder.partner("last-credit", credits=100, tier="enterprise")
    key = seeder.funded_key(partner, 1, ["gpt-4o", "gpt-4o-mini"], name="one credit")
    min_request = detail(seeder, partner, key.key_id).min_request_ucr
    assert min_request == 75  # gpt-4o-mini: 1 + 1 tokens at $0.15 + $0.60 per 1M

    statuses = []
    for _ in range(20):
        r = post(stack.proxy_url, key.secret, PRICEY)
        statuses.append((r.status_code, error_code(r)))
        assert (r.status_code, error_code(r)) in ((200, ""), (429, "insufficient_quota")), statuses
        if r.status_code == 429:
            break
        quiet_balance(seeder, key.account)
        time.sleep(0.3)  # the worker's turn: it sees every one of these usage events
    assert statuses[-1] == (429, "insufficient_quota") and len(statuses) >= 4, statuses
    d = detail(seeder, partner, key.key_id)
    assert d.settled_remaining_ucr >= min_request and d.key.status == pb.KEY_STATUS_ACTIVE

    # what is left still pays for smaller requests: the key's last credit is usable
    time.sleep(1.5)
    for _ in range(3):
        r = post(stack.proxy_url, key.secret, CHEAP)
        assert (r.status_code, error_code(r)) == (200, ""), r.text
    remaining = eventually(
        lambda: (d := detail(seeder, partner, key.key_id)).reserved_ucr == 0 and d, what="the small requests settled"
    )
    assert remaining.key.status == pb.KEY_STATUS_ACTIVE
    assert remaining.used_ucr + remaining.settled_remaining_ucr == CREDIT

"""Budget leases across three proxy replicas (CG_PROXY_LEASES=1), with the official SDK,
on SQLite and PostgreSQL: requests reserve against each replica's lease, yet a key never
spends past its budget, its last credits stay usable from any replica, every answered
request is billed exactly once, and a revoke with requests in flight gives every unused
credit back to the partner, once."""

from __future__ import annotations

import concurrent.futures
import itertools
import re
import threading
from collections.abc import Iterator

import httpx
import openai
import pytest

from cg_devstack import Stack
from cg_devstack.seed import Seeder
from cglib.money import UCR_PER_CREDIT as CREDIT
from creditgate.keys.v1 import keys_pb2 as kpb
from creditgate.ledger.v1 import ledger_pb2 as pb
from helpers import eventually, expected_cost_ucr
from support.stacks import stack_on

MODEL = "gpt-4o"  # $2.50 / $10 per 1M tokens: ~7,500 ucr a request, ~130 in one credit
LEASES = {"proxy": {"CG_PROXY_LEASES": "1"}}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request) -> Iterator[Stack]:
    with stack_on(request, env=LEASES) as s:
        yield s


@pytest.fixture(scope="module")
def replicas(stack: Stack) -> list[str]:
    urls = [stack.proxy_url]
    for i in (2, 3):
        _, url = stack.start_replica("proxy", f"proxy-{i}")
        urls.append(url)
    return urls


@pytest.fixture(scope="module")
def seeder(stack: Stack) -> Iterator[Seeder]:
    s = Seeder(stack.keys_addr, stack.ledger_addr)
    yield s
    s.close()


def _ask(url: str, secret: str) -> openai.types.CompletionUsage | str:
    """One request: its usage, or the error code it was refused with."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0, timeout=20)
    try:
        answer = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=5
        )
    except openai.APIStatusError as e:
        return str(e.code or e.status_code)
    assert answer.usage is not None
    return answer.usage


def _hammer(urls: list[str], secret: str, stop: threading.Event | None = None) -> tuple[list, list[str]]:
    """12 clients spread over the replicas until each has been refused 5 times in a row."""
    answered: list[openai.types.CompletionUsage] = []
    refused: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        in_a_row = 0
        for i in itertools.count():
            if in_a_row >= 5 or (stop is not None and stop.is_set() and in_a_row):
                return
            got = _ask(urls[(c + i) % len(urls)], secret)
            with lock:
                if isinstance(got, str):
                    refused.append(got)
                    in_a_row += 1
                else:
                    answered.append(got)
                    in_a_row = 0

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        list(pool.map(client, range(12)))
    return answered, refused


def _key(seeder: Seeder, ref: str):
    partner = seeder.partner(ref, credits=100, tier="enterprise")
    return partner, seeder.funded_key(partner, 1, [MODEL], name=ref)


def _balance(seeder: Seeder, account: str) -> pb.Balance:
    return seeder.ledger.GetBalance(pb.GetBalanceRequest(account=account), timeout=5)


def test_three_replicas_never_spend_past_a_budget_and_strand_none_of_it(stack, seeder, replicas):
    _, key = _key(seeder, "leases-exact")
    answered, refused = _hammer(replicas, key.secret)
    costs = [expected_cost_ucr(MODEL, u.prompt_tokens, u.completion_tokens) for u in answered]
    assert set(refused) == {"insufficient_quota"}, set(refused)
    assert len(answered) > 50  # most of the budget went through leases

    # every answer billed once, exactly; never past the budget
    spent = eventually(
        lambda: (CREDIT - _balance(seeder, key.account).posted_ucr == sum(costs)) and sum(costs),
        what="every answered request settled",
    )
    assert spent <= CREDIT
    # the last credits stayed usable: what is left cannot pay one more request (whose hold
    # is its upper bound, below two of these costs); a replica asked now refuses too
    assert CREDIT - spent < 2 * max(costs), (CREDIT - spent, max(costs))
    for url in replicas:
        assert _ask(url, key.secret) == "insufficient_quota"


def test_a_key_revoked_with_requests_in_flight_returns_every_unused_credit_once(stack, seeder, replicas):
    partner, key = _key(seeder, "leases-revoke")
    partner_before = _balance(seeder, f"partner:{partner}").posted_ucr
    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        hammering = pool.submit(_hammer, replicas, key.secret, stop)
        eventually(lambda: _balance(seeder, key.account).posted_ucr < CREDIT - 20 * 7_000, what="requests billed")
        seeder.keys.RevokeKey(kpb.RevokeKeyRequest(actor=kpb.Actor(partner_id=partner), key_id=key.key_id), timeout=5)
        stop.set()
        answered, refused = hammering.result(timeout=120)
    costs = [expected_cost_ucr(MODEL, u.prompt_tokens, u.completion_tokens) for u in answered]
    assert set(refused) <= {"invalid_api_key", "insufficient_quota"}, set(refused)

    def settled() -> bool:
        k = _balance(seeder, key.account)
        return k.pending_ucr == 0 and k.available_ucr == 0

    eventually(settled, timeout_s=30, what="the revoked key's leases released")  # at once, not at their expiry
    spent = CREDIT - _balance(seeder, key.account).posted_ucr - _balance(seeder, key.account).refunded_ucr
    assert spent == sum(costs)  # every answered request billed once; nothing else
    partner_after = _balance(seeder, f"partner:{partner}").posted_ucr
    assert partner_after == partner_before + CREDIT - sum(costs)  # every other credit back, once


def _reserve_calls(stack: Stack) -> float:
    """Reserve calls the ledger has answered so far (any outcome), from its metrics."""
    text = httpx.get(f"http://127.0.0.1:{stack.ports['ledger_metrics']}/metrics", timeout=5).text
    return sum(
        float(v) for v in re.findall(r'^cg_grpc_server_handled_total\{[^}]*method="Reserve"[^}]*\} (\S+)$', text, re.M)
    )


def test_a_60_rpm_key_gets_60_in_total_from_three_leasing_replicas(stack, seeder, replicas):
    """A key with limits leases request slots with its money: every slot is counted in the
    ledger's window until its deadline, so the limit holds across replicas exactly, and the
    requests take their slots with far fewer than one ledger call each (``Reserve`` only
    answers once no slot can be had: the 429s)."""
    partner = seeder.partner("leases-rpm", credits=100, tier="enterprise")
    key = seeder.funded_key(partner, 10, [MODEL], name="leases-rpm", rpm_limit=60)
    before = _reserve_calls(stack)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda url: _ask(url, key.secret), replicas * 30))  # 90 requests at once
    assert sum(not isinstance(g, str) for g in got) == 60
    assert sorted(g for g in got if isinstance(g, str)) == ["rate_limit_exceeded"] * 30
    reserves = _reserve_calls(stack) - before
    assert reserves <= 30 + 6  # the refusals (some answered from a slot-less lease at once) and a few more
    answered_by_slots = 60 - max(reserves - 30, 0)
    assert answered_by_slots >= 50

"""A dead dependency gives the client a fast, OpenAI-shaped 503, and service comes
back when the dependency does, without restarting the proxy. A key that holds a budget
lease goes on being served while the ledger is down, within what the lease holds."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import openai
import pytest
from conftest import running_stack

from cg_devstack.seed import Seeder
from helpers import client, eventually, expected_cost_ucr, quiet_balance

RPC_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def fault_stack():
    env = {
        "proxy": {"CG_PROXY_KEY_CACHE_TTL_S": "0", "CG_PROXY_RPC_TIMEOUT_S": str(RPC_TIMEOUT_S)},
        "mock": {"CG_MOCK_CHUNK_DELAY_MS": "50"},
    }
    with tempfile.TemporaryDirectory(prefix="cg-faults-") as var:
        with running_stack(Path(var), env=env) as stack:
            seeder = Seeder(stack.keys_addr, stack.ledger_addr)
            key = seeder.funded_key(seeder.partner("faults", credits=100), 10, ["gpt-4o-mini"])
            seeder.close()
            yield stack, key


def _call(stack, key):
    return client(stack, key.secret).chat.completions.create(
        model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )


@pytest.mark.parametrize("service", ["ledger", "keys"])
def test_dependency_down_is_a_fast_503_and_recovers(fault_stack, service):
    stack, key = fault_stack
    assert _call(stack, key).choices
    seeder = Seeder(stack.keys_addr, stack.ledger_addr)
    try:  # the key's lease released (idle): its next request needs the ledger
        quiet_balance(seeder, key.account)
    finally:
        seeder.close()
    stack.stop_service(service)
    try:
        for _ in range(3):
            start = time.monotonic()
            with pytest.raises(openai.InternalServerError) as e:
                _call(stack, key)
            elapsed = time.monotonic() - start
            assert e.value.status_code == 503
            err = e.value.response.json()["error"]
            assert err["code"] == "service_unavailable" and service in err["message"]
            assert e.value.response.headers.get("retry-after") == "1"
            assert elapsed < RPC_TIMEOUT_S + 1, f"took {elapsed:.2f}s"
    finally:
        stack.start_service(service)

    def works():
        try:
            return _call(stack, key).choices
        except openai.APIStatusError:
            return None

    eventually(works, timeout_s=15, what=f"service back after {service} restart")
    assert stack.procs["proxy"].running


def test_a_leased_key_is_served_while_the_ledger_is_down_and_billed_once_it_is_back(fault_stack):
    """Requests go on (from the key's lease, no ledger call) while the ledger restarts;
    their settlements wait in the journal and land once each when it is back, and the
    lease's unused part returns then too (not at its expiry)."""
    stack, key = fault_stack
    seeder = Seeder(stack.keys_addr, stack.ledger_addr)
    before = quiet_balance(seeder, key.account)
    served: list[tuple[int, int]] = []
    ledger_down = threading.Event()
    served_while_down = threading.Event()
    done = threading.Event()

    def traffic() -> None:  # one request after another, so the lease never goes idle
        while not done.is_set():
            try:
                reply = _call(stack, key)
            except openai.APIStatusError as e:
                assert e.status_code == 503  # the lease ran dry: the same fast 503 as without one
                continue
            served.append((reply.usage.prompt_tokens, reply.usage.completion_tokens))
            if ledger_down.is_set():
                served_while_down.set()
            time.sleep(0.02)  # a steady rate, so the lease is sized to it and settlements keep up

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        # a lease is sized to the key's recent rate: a second or two of traffic first
        eventually(lambda: len(served) >= 20, what="requests served before the ledger stops")
        stack.procs["ledger"].kill()  # at once: a graceful stop would let the lease drain meanwhile
        ledger_down.set()
        assert served_while_down.wait(10), "no request was served from the lease while the ledger was down"
        stack.start_service("ledger")
    finally:
        done.set()
        worker.join(30)
    cost = sum(expected_cost_ucr("gpt-4o-mini", p, c) for p, c in served)
    try:
        eventually(lambda: before - quiet_balance(seeder, key.account) == cost, what="every served request billed once")
    finally:
        seeder.close()


def test_sigterm_lets_an_in_flight_stream_finish_and_bills_it(fault_stack):
    """The proxy stops accepting, finishes the stream it is serving, settles it, exits 0."""
    stack, key = fault_stack
    seeder = Seeder(stack.keys_addr, stack.ledger_addr)
    before = quiet_balance(seeder, key.account)
    stream = client(stack, key.secret).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [next(stream)]
    stack.procs["proxy"].popen.send_signal(15)  # SIGTERM, mid-stream (the mock pauses 50 ms per chunk)
    chunks.extend(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.endswith("priced exactly.")
    usage = chunks[-1].usage
    # uvicorn re-raises the SIGTERM it caught once its graceful shutdown is done
    assert stack.procs["proxy"].popen.wait(20) in (0, -15)
    assert "Application shutdown complete" in stack.procs["proxy"].log_text()
    try:
        assert before - seeder.balance_ucr(key.account) == expected_cost_ucr(
            "gpt-4o-mini", usage.prompt_tokens, usage.completion_tokens
        )
    finally:
        seeder.close()
        stack.start_service("proxy")


def test_a_client_that_disconnects_mid_stream_is_billed_the_upstreams_usage_once(fault_stack):
    """The proxy keeps reading the provider after the client has gone, and bills the
    usage the provider reports (the mock pauses 50 ms per chunk, so the client leaves
    long before the end)."""
    import httpx

    stack, key = fault_stack
    seeder = Seeder(stack.keys_addr, stack.ledger_addr)
    try:
        before = quiet_balance(seeder, key.account)
        body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.stream(
            "POST",
            f"{stack.proxy_url}/v1/chat/completions",
            json=body,
            timeout=10,
            headers={"Authorization": f"Bearer {key.secret}"},
        ) as resp:
            assert resp.status_code == 200
            first = next(resp.iter_lines())
            assert first.startswith("data: ")
        # the connection is closed here, after one chunk; the full reply is 16 tokens
        cost = expected_cost_ucr("gpt-4o-mini", 7, 16)
        eventually(lambda: before - seeder.balance_ucr(key.account) == cost, what="billing of the full usage")
        time.sleep(1.5)  # and nothing more: one settlement
        assert before - seeder.balance_ucr(key.account) == cost
        try:
            eventually(
                lambda: '"outcome": "client_disconnected"' in stack.procs["worker"].log_text(),
                what="the usage event, marked client_disconnected, at the worker",
            )
        except AssertionError:
            for name in ("worker", "keys"):
                lines = [
                    line[:600]
                    for line in stack.procs[name].log_text().splitlines()
                    if '"level": "info"' not in line and "fetch failed" not in line
                ]
                print(f"--- {name} ---", *lines[-12:], sep="\n")
            raise
    finally:
        seeder.close()

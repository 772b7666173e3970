"""No usage event is lost while NATS is down: requests are served and billed, their
events wait in the proxy's outbox file across a proxy restart, and once NATS is back
the USAGE stream holds exactly one event per request."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import httpx
import pytest

from cg_devstack import Stack, StackConfig
from cg_devstack.seed import Seeder
from cglib import natsx
from creditgate.ledger.v1 import ledger_pb2
from helpers import client, eventually, expected_cost_ucr, usage_events

N = 5


@pytest.fixture(scope="module")
def stack():
    with tempfile.TemporaryDirectory(prefix="cg-outbox-") as var:
        config = StackConfig(var_dir=Path(var), services=("nats", "keys", "ledger", "mock", "proxy"))
        with Stack(config) as s:
            yield s


def nats_state(stack: Stack) -> str:
    return httpx.get(f"{stack.proxy_url}/readyz", timeout=5).json()["checks"]["nats"]


def metric(stack: Stack, name: str) -> float:
    for line in httpx.get(f"{stack.proxy_url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def outbox_rows(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [r[0] for r in db.execute("SELECT request_id FROM outbox")]


def test_events_of_requests_served_while_nats_is_down_survive_a_proxy_restart(stack: Stack):
    seeder = Seeder(stack.keys_addr, stack.ledger_addr)
    key = seeder.funded_key(seeder.partner("outbox", credits=100), 10, ["gpt-4o-mini"])
    subject = natsx.usage_subject(key.partner_id, key.key_id)
    outbox_path = Path(stack.procs["proxy"].env["CG_PROXY_OUTBOX_PATH"])
    sdk = client(stack, key.secret)

    def chat(text: str):
        raw = sdk.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": text}]
        )
        return raw.headers["x-request-id"], raw.parse()

    def quiet_balance() -> int:
        def settled():
            b = seeder.ledger.GetBalance(ledger_pb2.GetBalanceRequest(account=key.account), timeout=5)
            return b if b.pending_ucr == 0 else None

        return eventually(settled, what="no reservation pending").posted_ucr

    try:
        # healthy: published at once, the outbox untouched
        healthy_id, _ = chat("hello")
        eventually(
            lambda: [e.request_id for e in usage_events(stack, subject)] == [healthy_id],
            what="the healthy request's event",
        )
        assert metric(stack, "cg_proxy_outbox_events") == 0 and outbox_rows(outbox_path) == []

        stack.stop_service("nats")
        eventually(lambda: nats_state(stack) != "serving", what="the proxy seeing NATS gone")
        assert httpx.get(f"{stack.proxy_url}/readyz", timeout=5).status_code == 200, "ready without NATS"
        before = quiet_balance()
        ids, cost = [], 0
        for i in range(N):
            request_id, reply = chat(f"request {i} while NATS is down")
            assert reply.choices[0].message.content
            ids.append(request_id)
            cost += expected_cost_ucr("gpt-4o-mini", reply.usage.prompt_tokens, reply.usage.completion_tokens)
        assert len(set(ids)) == N
        eventually(lambda: before - quiet_balance() == cost, what="the requests billed")
        eventually(lambda: metric(stack, "cg_proxy_outbox_events") == N, what="the events in the outbox")

        # SIGTERM while NATS is still down: a graceful exit, the events left in the file
        assert stack.stop_service("proxy") in (0, -15)
        assert "Application shutdown complete" in stack.procs["proxy"].log_text()
        assert sorted(outbox_rows(outbox_path)) == sorted(ids)

        # a proxy (re)started while NATS is down is ready all the same: the outbox covers it
        stack.start_service("proxy")
        ready = httpx.get(f"{stack.proxy_url}/readyz", timeout=5)
        assert (ready.status_code, ready.json()["checks"]["nats"]) == (200, "not_connected")
        assert metric(stack, "cg_proxy_outbox_events") == N
        stack.start_service("nats")  # the proxy connects; its relay sends the file

        def delivered():
            got = [e.request_id for e in usage_events(stack, subject)]
            return got if len(got) >= N + 1 else None

        eventually(delivered, timeout_s=30, what="the outboxed events in the USAGE stream")
        eventually(lambda: outbox_rows(outbox_path) == [], what="the outbox emptied")  # nothing more to come
        assert metric(stack, "cg_proxy_outbox_events") == 0
        events = usage_events(stack, subject)
        assert sorted(e.request_id for e in events) == sorted([healthy_id, *ids]), (
            "one event per request, none missing, none twice"
        )
        assert sum(e.charged_ucr for e in events if e.request_id in ids) == cost
    finally:
        seeder.close()
        for name in ("nats", "proxy"):  # whatever the failure, leave the stack as found
            if not stack.procs[name].running:
                stack.start_service(name)

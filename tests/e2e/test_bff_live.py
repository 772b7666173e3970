"""GET /api/v1/events through the whole stack, with real users signed in (session
cookies), on SQLite and PostgreSQL: a partner's usage, balance and key changes reach its
own users within 2 s, its customer only what is the customer's, another partner
nothing; the BFF's shutdown ends every stream at once."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from cg_devstack import Stack
from cg_devstack.bff import BffClient, invite_and_accept
from helpers import client
from support.bff_usage import BilledKey, partner_with_billed_key


class Stream:
    """One browser's EventSource: its events, parsed, on a queue (filled by a thread)."""

    def __init__(self, user: BffClient) -> None:
        self.http = httpx.Client(
            base_url=user.http.base_url, cookies=user.http.cookies, timeout=httpx.Timeout(10, read=None)
        )
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.ended = threading.Event()
        self.opened = threading.Event()
        self.status = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.opened.wait(10) and self.status == 200, self.status

    def _read(self) -> None:
        try:
            with self.http.stream("GET", "/events") as response:
                self.status = response.status_code
                self.opened.set()
                name = "message"
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        self.events.put((name, json.loads(line[6:])))
                    elif line == "":
                        name = "message"
        except httpx.HTTPError:
            pass
        finally:
            self.opened.set()
            self.ended.set()

    def next(self, timeout_s: float = 2.0) -> tuple[str, dict[str, Any]]:
        return self.events.get(timeout=timeout_s)

    def until(self, kind: str, timeout_s: float = 2.0) -> dict[str, Any]:
        """The next event of this kind (others before it are dropped)."""
        deadline = time.monotonic() + timeout_s
        while True:
            name, data = self.next(max(deadline - time.monotonic(), 0.001))
            if name == kind:
                return data

    def first_of(self, kinds: set[str], timeout_s: float) -> dict[str, dict[str, Any]]:
        """The first event of each kind, whatever order they come in."""
        deadline, seen = time.monotonic() + timeout_s, {}
        while set(seen) != kinds:
            name, data = self.next(max(deadline - time.monotonic(), 0.001))
            if name in kinds:
                seen.setdefault(name, data)
        return seen

    def drained(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self.http.close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def tenants(stack: Stack):
    a = partner_with_billed_key(stack, "live-a")
    b = partner_with_billed_key(stack, "live-b")
    customer = invite_and_accept(
        a.owner,
        f"/partner/customers/{a.customer_id}/invites",
        {"email": f"customer-{uuid.uuid4().hex[:8]}@usage.test"},
        "another long password 2",
    )
    yield a, b, customer
    for user in (a.owner, b.owner, customer):
        user.close()


def one_call(stack: Stack, k: BilledKey) -> None:
    client(stack, k.secret).chat.completions.create(model=k.model, messages=[{"role": "user", "content": "hi"}])


def test_each_tenant_sees_its_own_changes_live(stack: Stack, tenants) -> None:
    a, b, customer = tenants
    streams = sa, sb, sc = Stream(a.owner), Stream(b.owner), Stream(customer)
    try:
        one_call(stack, a)
        sent = time.monotonic()
        usage = sa.until("usage")
        assert time.monotonic() - sent < 2.0
        assert (usage["key_id"], usage["customer_id"]) == (a.key_id, a.customer_id) and usage["cost_ucr"] > 0
        mine = sc.until("usage")
        assert mine["request_id"] == usage["request_id"] and "cost_ucr" not in mine
        assert mine["ai_credits_uai"] == usage["ai_credits_uai"] > 0

        a.owner.ok(
            "POST",
            f"/partner/keys/{a.key_id}/top-up",
            json={"amount_credits": 100},
            headers={"Idempotency-Key": f"top-up-{uuid.uuid4()}"},
        )
        seen = sa.first_of({"key", "balance"}, 5)
        assert (seen["key"]["key_id"], seen["key"]["change"]) == (a.key_id, "topped_up")
        assert seen["balance"]["account"] == f"partner:{a.partner_id}"
        assert sc.until("key", 5)["key_id"] == a.key_id  # the key bills this customer

        one_call(stack, b)
        assert sb.until("usage")["key_id"] == b.key_id
        time.sleep(1.0)  # anything of B's that would reach A's users has had time to
        a_events, c_events = sa.drained(), sc.drained()
        for _name, data in a_events + c_events:
            assert data.get("key_id") in (None, a.key_id) and data.get("account") in (None, f"partner:{a.partner_id}")
        assert all(name != "balance" for name, _ in c_events)  # never the partner's balance
        for name, data in sb.drained():
            assert data.get("key_id") in (None, b.key_id), (name, data)
    finally:
        for s in streams:
            s.close()


def test_shutdown_ends_every_stream_at_once(stack: Stack, tenants) -> None:
    a, _, customer = tenants
    streams = [Stream(a.owner), Stream(customer)]
    try:
        started = time.monotonic()
        stack.stop_service("bff")  # SIGTERM
        took = time.monotonic() - started
        assert all(s.ended.wait(5) for s in streams)
        assert took < 5.0, f"the BFF took {took:.1f} s to stop with two streams open"  # uvicorn's grace is 10 s
    finally:
        for s in streams:
            s.close()
        stack.start_service("bff")

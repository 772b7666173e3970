"""The tenant API in-process, against real keys, ledger and NATS processes.

``Harness`` runs the BFF app (``create_app``, its lifespan: migrations, gRPC channels,
background jobs) in a ``TestClient`` with a stand-in authenticator: a request carries
``Authorization: Test <name>`` and is the principal registered under that name. What is
tested is everything behind authentication: the route dependencies (who may call what),
the tenant scoping, the money through keys and the ledger. (The real sign-in is tested
over HTTP in ``test_bff_tenant_http.py``.)
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
from fastapi import Request
from fastapi.testclient import TestClient

from cg_bff.app import create_app
from cg_bff.principal import Principal
from cg_bff.settings import Settings
from cg_devstack import Stack
from cglib.money import UCR_PER_CREDIT
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc

CREDIT = UCR_PER_CREDIT


class FakeAuth:
    """``Authorization: Test <name>``: the principal registered as ``name``; none: anonymous."""

    def __init__(self) -> None:
        self.principals: dict[str, Principal] = {}

    async def authenticate(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization", "")
        scheme, _, name = header.partition(" ")
        if scheme != "Test":
            return None
        return self.principals[name]


class Harness:
    def __init__(self, stack: Stack, client: TestClient, auth: FakeAuth) -> None:
        self.stack = stack
        self.client = client
        self.auth = auth
        self._ledger_ch = grpc.insecure_channel(stack.ledger_addr)
        self.ledger = ledger_pb2_grpc.LedgerServiceStub(self._ledger_ch)
        self.auth.principals["admin"] = Principal(kind="admin", via="session", user_id="usr_admin", email="a@x.io")

    def close(self) -> None:
        self._ledger_ch.close()

    # -- principals ----------------------------------------------------------------------

    def partner_user(self, name: str, partner_id: str, role: str = "owner") -> str:
        self.auth.principals[name] = Principal(
            kind="partner",
            via="session",
            user_id=f"usr_{name}",
            email=f"{name}@x.io",
            partner_id=partner_id,
            role=role,
        )
        return name

    def partner_token(self, name: str, partner_id: str, scope: str) -> str:
        self.auth.principals[name] = Principal(
            kind="partner",
            via="token",
            partner_id=partner_id,
            scope=scope,
            token_id=f"tok_{name}",
        )
        return name

    def customer_user(self, name: str, partner_id: str, customer_id: str) -> str:
        self.auth.principals[name] = Principal(
            kind="customer",
            via="session",
            user_id=f"usr_{name}",
            email=f"{name}@x.io",
            partner_id=partner_id,
            customer_id=customer_id,
        )
        return name

    # -- requests ------------------------------------------------------------------------

    def call(
        self, who: str | None, method: str, path: str, json: Any = None, idem: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if who is not None:
            headers["Authorization"] = f"Test {who}"
        if idem is not None:
            headers["Idempotency-Key"] = idem
        return self.client.request(method, f"/api/v1{path}", json=json, headers=headers, **kw)

    def ok(self, who: str | None, method: str, path: str, json: Any = None, idem: str | None = None, **kw: Any) -> Any:
        r = self.call(who, method, path, json, idem, **kw)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    # -- set-up through the API itself ----------------------------------------------------

    def new_partner(self, tier: str = "growth", credits: int = 10_000, name: str = "Partner") -> str:
        """A partner (made by the platform admin through the API) with ``credits`` deposited."""
        made = self.ok("admin", "POST", "/admin/partners", {"name": name, "tier": tier})
        if credits:
            self.ok(
                "admin",
                "POST",
                f"/admin/partners/{made['id']}/deposits",
                {"amount_credits": str(credits)},
                idem=uuid.uuid4().hex,
            )
        return str(made["id"])

    def balance(self, account: str) -> ledger_pb2.Balance:
        return self.ledger.GetBalance(ledger_pb2.GetBalanceRequest(account=account), timeout=10)

    def posted(self, account: str) -> int:
        try:
            return self.balance(account).posted_ucr
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return 0
            raise


def bff_settings(stack: Stack, var: Path) -> Settings:
    return Settings(
        database_url=stack.config.bff_db or f"sqlite:///{var / 'bff-inprocess.db'}",
        keys_addr=stack.keys_addr,
        ledger_addr=stack.ledger_addr,
        nats_url=stack.nats_url,
        ledger_admin_token=stack.ledger_admin_token,
        webhooks_allow_private=True,
    )


@contextlib.contextmanager
def harness(stack: Stack, var: Path) -> Iterator[Harness]:
    app = create_app(bff_settings(stack, var))
    auth = FakeAuth()
    with TestClient(app) as client:
        app.state.bff.auth = auth
        h = Harness(stack, client, auth)
        try:
            yield h
        finally:
            h.close()


def error(r: httpx.Response) -> dict[str, Any]:
    """The error body, checked to be the API's one shape."""
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "fields"}, body
    return dict(body["error"])

"""A fuzzer over the proxy's HTTP API, driven by its own OpenAPI description.

schemathesis reads ``GET /openapi.json`` (OpenAI's request schemas for the metered
endpoints) and generates bodies that fit it (positive) and bodies that break it
(negative) for each of the three metered endpoints, sent with a funded key to the whole
stack. Whatever the body:
- the answer is never a 5xx, and is always OpenAI's error shape when it is an error;
- a refused request (4xx) moves no money: the key's and the partner's balances are as
  they were, and nothing is held;
- the books pass the ledger's audit at the end.

Bounded: ``CG_FUZZ_EXAMPLES`` per endpoint and mode (25 by default), derandomized for CI;
``CG_FUZZ_RANDOM=1`` and a bigger count for a longer hunt.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, openapi

from cg_devstack import Stack, StackConfig
from cg_devstack.seed import Seeder
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from e2e.helpers import eventually

EXAMPLES = int(os.environ.get("CG_FUZZ_EXAMPLES", "25"))
RANDOM = os.environ.get("CG_FUZZ_RANDOM") == "1"
MODELS = ["gpt-4o-mini", "claude-haiku-4-5"]
PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    var = Path(tmp_path_factory.mktemp("fuzz-proxy"))
    with Stack(StackConfig(var_dir=var, services=("nats", "keys", "ledger", "mock", "proxy"))) as stack:
        seeder = Seeder(stack.keys_addr, stack.ledger_addr)
        partner = seeder.partner("fuzz-proxy", credits=100_000, tier="enterprise")
        key = seeder.funded_key(partner, budget_credits=50_000, models=MODELS)
        schema = openapi.from_url(f"{stack.proxy_url}/openapi.json")
        with httpx.Client(base_url=stack.proxy_url, timeout=30) as http:
            try:
                yield stack, seeder, key, schema, http
            finally:
                seeder.close()


def _balances(seeder: Seeder, key) -> tuple:
    """(posted, pending) of the key and of its partner, once nothing is in flight (a
    request answered a moment ago settles just after its answer)."""

    def quiet():
        got = [
            seeder.ledger.GetBalance(ledger_pb2.GetBalanceRequest(account=a), timeout=5)
            for a in (key.account, f"partner:{key.partner_id}")
        ]
        return tuple((b.posted_ucr, b.pending_ucr) for b in got) if all(b.pending_ucr == 0 for b in got) else None

    return eventually(quiet, timeout_s=20, what="no hold in flight")


def _fuzz(world, data, path: str, mode: GenerationMode) -> None:
    stack, seeder, key, schema, http = world
    case = data.draw(schema[path]["POST"].as_strategy(generation_mode=mode), label="case")
    body = case.body
    if isinstance(body, dict) and data.draw(st.booleans(), label="a model the key allows"):
        body = {**body, "model": data.draw(st.sampled_from(MODELS))}
    before = _balances(seeder, key)
    headers = {"Authorization": f"Bearer {key.secret}", "Content-Type": "application/json"}
    if isinstance(body, (bytes, str)):  # a negative case may be no JSON at all
        r = http.post(path, content=body, headers=headers)
    else:
        r = http.post(path, json=body, headers=headers)
    assert r.status_code < 500, f"{path} {r.status_code}: {r.text[:500]}\nbody: {str(body)[:1000]}"
    if r.status_code >= 400:
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert _balances(seeder, key) == before, f"a refused request moved money: {error}"


SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None, suppress_health_check=list(HealthCheck)
)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["fits", "breaks"])
def test_no_body_is_a_server_fault_and_no_refusal_moves_money(world, path, mode):
    @SETTINGS
    @given(data=st.data())
    def run(data):
        _fuzz(world, data, path, mode)

    run()


def test_the_books_pass_the_audit_after_the_fuzzing(world):
    stack, seeder, *_ = world
    admin = ledger_pb2_grpc.LedgerAdminServiceStub(seeder._ledger_ch)
    audit = admin.AuditBooks(
        ledger_pb2.AuditBooksRequest(), metadata=(("x-cg-admin-token", stack.ledger_admin_token),), timeout=30
    )
    assert audit.ok, list(audit.discrepancies)

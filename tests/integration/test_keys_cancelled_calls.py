"""Callers that give up do not wedge the keys service.

gRPC cancels a handler when its caller's deadline passes or the caller goes (a worker
killed mid-call, a client with a short deadline). Cancelled in the wrong await, an async
SQLAlchemy session never gives its connection back to the pool; on SQLite the keys
service has one, and every later call then waited for it until its own deadline. Handlers
now run to their end whatever the caller does (``cglib.grpc_server.RunToTheEndInterceptor``).
Here: rounds of reads and top-ups cut short by deadlines of a few milliseconds, on the real
process, and after each round the service still answers at once; the top-ups cut short
were each made once, or not at all, never twice.
"""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from cglib.money import UCR_PER_CREDIT as CREDIT
from creditgate.keys.v1 import keys_pb2 as pb
from creditgate.keys.v1 import keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2 as lpb
from creditgate.ledger.v1 import ledger_pb2_grpc
from support.stacks import KEYS_AND_LEDGER, stack_on

ROUNDS = 40
CALLS_PER_ROUND = 60  # before the fix, the service was wedged within 20-40 such rounds


@pytest.fixture(scope="module", params=["sqlite"])  # one connection: a lost one shows at once
def stack(request):
    with stack_on(request, KEYS_AND_LEDGER) as s:
        yield s


async def test_callers_that_give_up_leave_the_keys_service_answering(stack):
    async with (
        grpc.aio.insecure_channel(stack.keys_addr) as keys_ch,
        grpc.aio.insecure_channel(stack.ledger_addr) as ledger_ch,
    ):
        keys, ledger = keys_pb2_grpc.KeysServiceStub(keys_ch), ledger_pb2_grpc.LedgerServiceStub(ledger_ch)
        partner = await keys.CreatePartner(
            pb.CreatePartnerRequest(name="P", tier="growth", external_ref=uuid.uuid4().hex), timeout=10
        )
        actor = pb.Actor(partner_id=partner.id)
        await ledger.Deposit(
            lpb.DepositRequest(
                idempotency_id=uuid.uuid4().hex, account=f"partner:{partner.id}", amount_ucr=10**6 * CREDIT
            ),
            timeout=10,
        )
        created = await keys.CreateKey(
            pb.CreateKeyRequest(
                actor=actor,
                idempotency_key="k",
                budget_credits=10,
                fields=pb.KeyFields(name="k", allowed_models=["gpt-4o-mini"]),
            ),
            timeout=10,
        )
        key_id = created.key.id

        def top_up(r: int, i: int) -> pb.TopUpKeyRequest:
            """One credit, under an idempotency key of its own: call ``i`` of round ``r``."""
            return pb.TopUpKeyRequest(actor=actor, key_id=key_id, amount_credits=1, idempotency_key=f"cut-{r}-{i}")

        topups = 0
        for r in range(ROUNDS):
            calls = []
            for i in range(CALLS_PER_ROUND):
                deadline = 0.001 + (i % 10) * 0.002
                if i % 3 == 0:
                    calls.append(keys.ListKeys(pb.ListKeysRequest(actor=actor), timeout=deadline))
                elif i % 3 == 1:
                    calls.append(keys.GetKey(pb.GetKeyRequest(actor=actor, key_id=key_id), timeout=deadline))
                else:
                    topups += 1
                    calls.append(keys.TopUpKey(top_up(r, i), timeout=deadline))
            await asyncio.gather(*calls, return_exceptions=True)
            # answers now, not after the 10 s deadline
            await keys.GetKey(pb.GetKeyRequest(actor=actor, key_id=key_id), timeout=10)

        # each top-up once at most: a retry of every one with its idempotency key makes the rest
        for r in range(ROUNDS):
            for i in range(2, CALLS_PER_ROUND, 3):
                await keys.TopUpKey(top_up(r, i), timeout=10)
        detail = await keys.GetKey(pb.GetKeyRequest(actor=actor, key_id=key_id), timeout=10)
        assert detail.key.funded_ucr == (10 + topups) * CREDIT

"""The proxy's ledger client over a fake gRPC stub (what it sends, how it maps refusals),
and the usage recorder's retries (``cglib.retry``): settlements and voids retried until
acknowledged, only for failures the same call may get past, a give-up logged as an error."""

from __future__ import annotations

import logging
import time

import grpc
import pytest
from proxy_fakes import BILLING, GPT, FakeBus, rpc_error

from cg_proxy import errors, usage_recorder
from cg_proxy.collaborators import Finished
from cg_proxy.leases import Granted, LeaseBook, RateSpec
from cg_proxy.ledger_client import LedgerClient
from cg_proxy.outbox import Outbox
from cg_proxy.token_usage import Usage
from cg_proxy.usage_recorder import UsageRecorder
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2
from creditgate.ledger.v1 import ledger_pb2

USAGE = Usage(9, 2, ledger_pb2.USAGE_SOURCE_PROVIDER)


class FakeStub:
    """The ledger's Reserve, SettleBatch and Void, failing with ``failures`` first."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls: list[tuple[str, object, float | None]] = []

    def _next(self, method: str, request: object, timeout: float | None) -> None:
        self.calls.append((method, request, timeout))
        if self.failures:
            raise self.failures.pop(0)

    async def Reserve(self, request: ledger_pb2.ReserveRequest, timeout: float | None = None):
        self._next("Reserve", request, timeout)
        return ledger_pb2.ReserveResponse(request_id=request.request_id)

    async def SettleBatch(self, request: ledger_pb2.SettleBatchRequest, timeout: float | None = None):
        self._next("SettleBatch", request, timeout)
        return ledger_pb2.SettleBatchResponse(
            outcomes=[
                ledger_pb2.SettleOutcome(settled=ledger_pb2.SettleResponse(request_id=s.request_id, charged_ucr=5))
                for s in request.settlements
            ]
        )

    async def Void(self, request: ledger_pb2.VoidRequest, timeout: float | None = None):
        self._next("Void", request, timeout)
        return ledger_pb2.VoidResponse(request_id=request.request_id)


async def test_reserve_sends_the_bound_the_price_and_the_customers_terms():
    stub = FakeStub()
    limit = ledger_pb2.RateLimit(key="key_1", rpm=60)
    await LedgerClient(stub, timeout_s=1.5, ttl_s=900).reserve("req_1", BILLING, GPT, 40, 300, limit)
    ((method, req, timeout),) = stub.calls
    assert (method, timeout) == ("Reserve", 1.5)
    assert (req.request_id, req.account, req.model, req.max_input_tokens, req.max_output_tokens) == (
        "req_1",
        "key:key_1",
        "gpt-4o-mini",
        40,
        300,
    )
    assert (req.price.input_usd_per_mtok, req.price.price_book_version, req.ttl_seconds) == ("0.15", "pb-1", 900)
    assert (req.customer.customer_account, req.customer.revenue_account) == ("customer:cust_1", "partnerrev:p_1")
    assert req.rate_limit == limit


async def test_a_key_billed_to_no_customer_reserves_without_customer_terms():
    stub = FakeStub()
    await LedgerClient(stub, 1, 900).reserve("r", keys_pb2.LedgerBilling(payer_account="partner:p_1"), GPT, 1, 1)
    assert not stub.calls[0][1].HasField("customer")


@pytest.mark.parametrize(
    "code, status",
    [
        (grpc.StatusCode.FAILED_PRECONDITION, 429),
        (grpc.StatusCode.NOT_FOUND, 429),
        (grpc.StatusCode.OUT_OF_RANGE, 400),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 503),
        (grpc.StatusCode.CANCELLED, 503),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 503),
    ],
)
async def test_refusals_become_the_clients_answer(code, status):
    with pytest.raises(errors.APIError) as e:
        await LedgerClient(FakeStub(rpc_error(code)), 1, 900).reserve("r", BILLING, GPT, 1, 1)
    assert e.value.status == status


async def test_other_codes_are_raised_as_they_are():
    with pytest.raises(grpc.aio.AioRpcError):
        await LedgerClient(FakeStub(rpc_error(grpc.StatusCode.INTERNAL)), 1, 900).reserve("r", BILLING, GPT, 1, 1)


class PlentyLeases:
    """A lease ledger with money to spare and every request slot asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def _grant(self, call: str, rate: RateSpec | None, slots: tuple[int, int] | None) -> Granted:
        self.calls.append((call, slots))
        now_ms = int(time.time() * 1000)
        k = slots[0] if slots else 0
        state = ledger_pb2.RateLimitState(limit_requests=rate.rpm, remaining_requests=rate.rpm - k) if rate else None
        return Granted(10**12, 10**12, now_ms + 600_000, "open", k, now_ms + 3_000 if k else 0, state)

    async def acquire(self, lease_id, terms, want, least, ttl_s, slots=None) -> Granted:
        return self._grant("acquire", terms.rate, slots)

    async def extend(self, extension_id, lease_id, want, least, ttl_s, slots=None, terms=None) -> Granted:
        return self._grant("extend", terms.rate if terms else None, slots)

    async def release(self, release_id, lease_id, keep, return_requests=0) -> Granted:
        return Granted(0, 0, 0, "closed", return_requests)


@pytest.mark.parametrize("rpm, tpm, leased", [(60, 0, True), (0, 1000, False), (60, 1000, False), (0, 0, True)])
async def test_only_a_key_without_a_tpm_limit_is_served_from_its_lease(rpm, tpm, leased):
    """RPM only: a request slot from the lease, no Reserve; a TPM limit (with or without
    RPM): every request reserved at the ledger, which checks the window (docs/leases.md)."""
    stub, lease_ledger = FakeStub(), PlentyLeases()
    client = LedgerClient(stub, 1, 900, leases=LeaseBook(lease_ledger, worker_id="w"))
    limit = ledger_pb2.RateLimit(key="key_1", rpm=rpm, tpm=tpm) if rpm or tpm else None
    resp = await client.reserve("r1", BILLING, GPT, 40, 300, limit)
    assert [c[0] for c in stub.calls] == ([] if leased else ["Reserve"])
    assert bool(lease_ledger.calls) == leased
    if leased and rpm:
        assert lease_ledger.calls[0][1] is not None  # the lease was asked for request slots
        assert (resp.rate_limit.limit_requests, resp.rate_limit.remaining_requests) == (60, 59)
    assert client.leases is not None
    await client.leases.close()


# -- the recorder's retries -------------------------------------------------------------


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(usage_recorder, "RETRY_FIRST_DELAY_S", 0.001)
    monkeypatch.setattr(usage_recorder, "RETRY_MAX_DELAY_S", 0.002)


def finished(request_id: str) -> Finished:
    key = keys_pb2.Key(id="key_1", partner_id="p_1")
    outcome = events_pb2.USAGE_OUTCOME_OK
    return Finished(request_id, key, "", "gpt-4o-mini", USAGE, outcome, time.perf_counter(), False)


async def record(tmp_path, stub: FakeStub, *, void: bool = False) -> FakeBus:
    bus, outbox = FakeBus(), Outbox(tmp_path / "o.sqlite3")
    recorder = UsageRecorder(LedgerClient(stub, 1, 900), bus, outbox)
    if void:
        recorder.void("req_1", "upstream_error")
    else:
        recorder.record(finished("req_1"))
    await recorder.drain(5)
    outbox.close()
    return bus


@pytest.mark.parametrize(
    "failure",
    [
        rpc_error(grpc.StatusCode.UNAVAILABLE),
        rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED),
        rpc_error(grpc.StatusCode.INTERNAL),  # the ledger's own failure: settle is idempotent
        rpc_error(grpc.StatusCode.UNKNOWN),
        ConnectionResetError("channel closed"),
    ],
)
async def test_a_settlement_is_retried_until_acknowledged(tmp_path, fast_retries, failure):
    stub = FakeStub(failure, failure)
    bus = await record(tmp_path, stub)
    assert [m for m, _, _ in stub.calls] == ["SettleBatch"] * 3
    (_, payload, _) = bus.published[0]
    assert events_pb2.UsageEvent.FromString(payload).charged_ucr == 5


async def test_a_refused_settlement_is_not_retried_and_the_give_up_is_an_error(tmp_path, fast_retries, caplog):
    stub = FakeStub(rpc_error(grpc.StatusCode.INVALID_ARGUMENT))
    with caplog.at_level(logging.WARNING, logger="cg_proxy.usage_recorder"):
        bus = await record(tmp_path, stub)
    assert len(stub.calls) == 1 and bus.published == []
    (given_up,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert given_up.getMessage() == "settlement failed for good" and given_up.request_id == "req_1"


async def test_a_settlement_is_given_up_after_the_horizon(tmp_path, fast_retries, monkeypatch, caplog):
    monkeypatch.setattr(usage_recorder, "GIVE_UP_AFTER_S", 0.05)
    stub = FakeStub(*[rpc_error(grpc.StatusCode.UNAVAILABLE)] * 1000)
    with caplog.at_level(logging.ERROR, logger="cg_proxy.usage_recorder"):
        bus = await record(tmp_path, stub)
    assert 1 < len(stub.calls) < 1000 and bus.published == []
    assert [r.getMessage() for r in caplog.records] == ["settlement failed for good"]


async def test_a_void_is_retried_until_acknowledged(tmp_path, fast_retries):
    stub = FakeStub(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED))
    await record(tmp_path, stub, void=True)
    assert [(m, r.reason) for m, r, _ in stub.calls] == [("Void", "upstream_error")] * 2

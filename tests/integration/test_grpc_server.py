"""cglib's gRPC server factory: what every service gets from it, checked on a real
server over loopback (a servicer whose every method is UNIMPLEMENTED is enough)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from cglib.grpc_client import insecure_channel
from cglib.grpc_server import MAX_REQUEST_BYTES, create_server
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc

DEPOSIT = "/creditgate.ledger.v1.LedgerService/Deposit"
SERVICE = ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"].full_name


@pytest.fixture
async def channel():
    servicer = ledger_pb2_grpc.LedgerServiceServicer()  # every method: UNIMPLEMENTED
    server, port, _ = create_server(
        "127.0.0.1:0", lambda s: ledger_pb2_grpc.add_LedgerServiceServicer_to_server(servicer, s), [SERVICE]
    )
    await server.start()
    ch = insecure_channel(f"127.0.0.1:{port}")
    yield ch
    await ch.close()
    await server.stop(0)


async def raw_call(channel, body: bytes) -> grpc.StatusCode:
    call = channel.unary_unary(DEPOSIT, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call(body, timeout=5)
    return e.value.code()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xff\xff\xff\xff", id="not-a-tag"),
        pytest.param(b"\x0a\x05ab", id="truncated-string"),
        pytest.param(b"\x0a\x02\xff\xfe", id="invalid-utf8-in-a-string-field"),
        pytest.param(b"\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", id="varint-too-long"),
    ],
)
async def test_a_corrupt_request_is_invalid_argument_and_never_reaches_the_handler(channel, body):
    assert await raw_call(channel, body) == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_well_formed_request_reaches_the_handler(channel):
    body = ledger_pb2.DepositRequest(idempotency_id="d1", account="partner:p1", amount_ucr=1).SerializeToString()
    assert await raw_call(channel, body) == grpc.StatusCode.UNIMPLEMENTED


async def test_a_request_over_the_size_limit_is_refused(channel):
    body = ledger_pb2.DepositRequest(memo="x" * (MAX_REQUEST_BYTES + 1)).SerializeToString()
    assert await raw_call(channel, body) == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_second_server_cannot_take_a_port_in_use():
    servicer = ledger_pb2_grpc.LedgerServiceServicer()

    def register(s: grpc.aio.Server) -> None:
        ledger_pb2_grpc.add_LedgerServiceServicer_to_server(servicer, s)

    first, port, _ = create_server("127.0.0.1:0", register, [SERVICE])
    await first.start()
    try:
        with pytest.raises(RuntimeError):  # grpc: "Failed to bind to address"
            create_server(f"127.0.0.1:{port}", register, [SERVICE])
    finally:
        await first.stop(0)


# -- domain errors -> status codes (cglib.grpc_errors) -----------------------------------


class Missing(Exception):
    pass


class MissingAccount(Missing):
    pass


class Faulty(ledger_pb2_grpc.LedgerServiceServicer):
    """Deposit fails as its memo says."""

    async def Deposit(
        self, request: ledger_pb2.DepositRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.TransferResult:
        if request.memo == "mapped":
            raise Missing("no such thing")
        if request.memo == "subclass":
            raise MissingAccount("no such account")
        if request.memo == "abort":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "the handler's own answer")
        raise RuntimeError("internals: /var/db/secret.sqlite3")


@pytest.fixture
async def faulty():
    servicer = Faulty()
    server, port, _ = create_server(
        "127.0.0.1:0",
        lambda s: ledger_pb2_grpc.add_LedgerServiceServicer_to_server(servicer, s),
        [SERVICE],
        {Missing: grpc.StatusCode.NOT_FOUND},
    )
    await server.start()
    ch = insecure_channel(f"127.0.0.1:{port}")
    yield ledger_pb2_grpc.LedgerServiceStub(ch)
    await ch.close()
    await server.stop(0)


@pytest.mark.parametrize(
    ("memo", "code", "details"),
    [
        ("mapped", grpc.StatusCode.NOT_FOUND, "no such thing"),
        ("subclass", grpc.StatusCode.NOT_FOUND, "no such account"),
        ("abort", grpc.StatusCode.PERMISSION_DENIED, "the handler's own answer"),
        ("other", grpc.StatusCode.INTERNAL, "internal error"),
    ],
)
async def test_domain_errors_are_mapped_and_anything_else_is_internal(faulty, caplog, memo, code, details):
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await faulty.Deposit(ledger_pb2.DepositRequest(memo=memo), timeout=5)
    assert (e.value.code(), e.value.details()) == (code, details)
    logged = [r for r in caplog.records if r.name == "cglib.grpc_errors"]
    if memo == "other":  # logged with its trace; the caller learns nothing of it
        assert len(logged) == 1 and logged[0].exc_info is not None and "secret" not in e.value.details()
    else:
        assert not logged


# -- a caller that gives up does not cut its handler half way ------------------------------


class Slow(ledger_pb2_grpc.LedgerServiceServicer):
    """Deposit waits for ``gate``, then says how it ended in ``ended``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def Deposit(
        self, request: ledger_pb2.DepositRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.TransferResult:
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.ended.set_result("cancelled")
            raise
        self.ended.set_result("finished")
        if request.memo == "fail":
            raise RuntimeError("nobody hears this")
        return ledger_pb2.TransferResult()


@pytest.mark.parametrize("memo", ["answer", "fail"])
async def test_a_handler_whose_caller_gave_up_runs_to_its_end(memo):
    servicer = Slow()
    server, port, _ = create_server(
        "127.0.0.1:0", lambda s: ledger_pb2_grpc.add_LedgerServiceServicer_to_server(servicer, s), [SERVICE]
    )
    await server.start()
    ch = insecure_channel(f"127.0.0.1:{port}")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await ledger_pb2_grpc.LedgerServiceStub(ch).Deposit(ledger_pb2.DepositRequest(memo=memo), timeout=0.2)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert not servicer.ended.done()  # the deadline passed: still running
        servicer.gate.set()
        assert await asyncio.wait_for(servicer.ended, 5) == "finished"
    finally:
        await ch.close()
        await server.stop(0)

"""cglib's gRPC server factory: what every service gets from it, checked on a real
server over loopback (a servicer whose every method is UNIMPLEMENTED is enough)."""

from __future__ import annotations

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
    register = lambda s: ledger_pb2_grpc.add_LedgerServiceServicer_to_server(servicer, s)  # noqa: E731
    first, port, _ = create_server("127.0.0.1:0", register, [SERVICE])
    await first.start()
    try:
        with pytest.raises(RuntimeError):  # grpc: "Failed to bind to address"
            create_server(f"127.0.0.1:{port}", register, [SERVICE])
    finally:
        await first.stop(0)

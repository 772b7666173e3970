"""cglib.retry: the one backoff loop every service uses."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from cglib import retry


def _rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "x")


async def test_it_retries_until_the_call_succeeds():
    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("not yet")
        return "ok"

    assert await retry.retrying(flaky, what="t", first_delay_s=0.001) == "ok"
    assert len(calls) == 3


async def test_what_is_not_transient_is_raised_at_once():
    calls = []

    async def refused():
        calls.append(1)
        raise _rpc_error(grpc.StatusCode.INVALID_ARGUMENT)

    with pytest.raises(grpc.aio.AioRpcError):
        await retry.retrying(refused, what="t", retry_on=retry.grpc_transient, first_delay_s=0.001)
    assert len(calls) == 1


async def test_it_gives_up_after_its_deadline_with_the_last_error_never_silently():
    async def down():
        raise _rpc_error(grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await retry.retrying(
            down, what="t", retry_on=retry.grpc_transient, give_up_after_s=0.05, first_delay_s=0.01, max_delay_s=0.01
        )
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_stop_ends_the_wait_at_once():
    stop = asyncio.Event()

    async def down():
        stop.set()
        raise ConnectionError("down")

    with pytest.raises(retry.Stopped):
        await asyncio.wait_for(retry.retrying(down, what="t", stop=stop, first_delay_s=30), timeout=2)


def test_delays_double_up_to_the_cap_with_jitter_below():
    d = retry.delays(0.1, 0.4)
    got = [next(d) for _ in range(5)]
    for value, nominal in zip(got, [0.1, 0.2, 0.4, 0.4, 0.4], strict=True):
        assert 0.8 * nominal <= value <= nominal

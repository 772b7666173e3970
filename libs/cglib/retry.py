"""One way to try again: exponential backoff with jitter, for every loop that waits out a
dependency (a NATS connection, a consumer declaration, a settlement the ledger has not
acknowledged yet).

    await retrying(lambda: natsx.connect(url, "keys"), what="nats connect", stop=stop)
    await retrying(settle, what="settle", retry_on=grpc_transient, give_up_after_s=3600)

``retrying`` returns the call's result. It retries what ``retry_on`` accepts (every
``Exception`` by default), logging each failure; it raises the last error once
``give_up_after_s`` has passed (never silently: the caller decides what a give-up means),
and raises ``Stopped`` when ``stop`` is set (a shutdown) instead of sleeping again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import grpc

from cglib.grpc_client import TRANSIENT

T = TypeVar("T")
log = logging.getLogger(__name__)


class Stopped(Exception):
    """The stop event was set while waiting to retry."""


def any_exception(_: BaseException) -> bool:
    return True


def grpc_transient(e: BaseException) -> bool:
    """A gRPC failure worth retrying with the same request (and idempotency id)."""
    return isinstance(e, grpc.aio.AioRpcError) and e.code() in TRANSIENT


def delays(first_s: float = 0.1, max_s: float = 5.0) -> Iterator[float]:
    """0.1, 0.2, 0.4, ... up to ``max_s``, each with up to 20% jitter, for ever."""
    delay = first_s
    while True:
        yield delay * random.uniform(0.8, 1.0)
        delay = min(delay * 2, max_s)


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    retry_on: Callable[[BaseException], bool] = any_exception,
    give_up_after_s: float | None = None,
    stop: asyncio.Event | None = None,
    first_delay_s: float = 0.1,
    max_delay_s: float = 5.0,
    extra: dict[str, object] | None = None,
) -> T:
    deadline = None if give_up_after_s is None else time.monotonic() + give_up_after_s
    for delay in delays(first_delay_s, max_delay_s):
        if stop is not None and stop.is_set():
            raise Stopped(what)
        try:
            return await call()
        except Exception as e:
            if not retry_on(e) or (deadline is not None and time.monotonic() + delay > deadline):
                raise
            log.warning(f"{what} failed; retrying", extra={**(extra or {}), "error": _describe(e), "delay_s": delay})
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):  # woken early by a stop, or the delay passed
                await asyncio.wait_for(stop.wait(), timeout=delay)
    raise AssertionError("unreachable")


def _describe(e: BaseException) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    return repr(e)

"""Job: the live-update hub's life (``cg_bff.usage.live``).

uvicorn, told to stop, first waits for open responses to finish (up to its graceful
timeout) and only then runs the app's shutdown, so an event stream, which never
finishes by itself, would hold every shutdown for the whole timeout and then be cut.
This job therefore chains the SIGTERM and SIGINT handlers that uvicorn installed: the
signal ends every stream (``LiveHub.close``, run on the event loop), then uvicorn's own
handler runs as before. The handlers are put back when the job ends; in a thread other
than the main one (an in-process test server) nothing is chained. The app's shutdown
(``stop``) closes the hub too.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from cg_bff.state import BffState
from cg_bff.usage.live import LiveHub, hub_of

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def closing_on_signals(hub: LiveHub) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(hub.close)  # a signal handler may interrupt the loop anywhere
        chained = previous.get(signum)
        if callable(chained):
            chained(signum, frame)
        elif chained == signal.SIG_DFL:  # nobody else handles it: what it would have done
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for sig in SIGNALS:
        previous[int(sig)] = signal.getsignal(sig)
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            if signal.getsignal(signum) is handler:  # not replaced since: put the old one back
                signal.signal(signum, old)


async def run(state: BffState, stop: asyncio.Event) -> None:
    hub = hub_of(state)
    with closing_on_signals(hub):
        await stop.wait()
    hub.close()

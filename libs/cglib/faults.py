"""Crash points and hold points for crash tests, and nothing else.

``CG_CRASH_AT=<point>`` (read once at start) makes the process exit at once, with no
cleanup, when it reaches that point. Points are named ``<operation>:<moment>``, e.g.
``fund:before_commit`` in the ledger or ``create:after_funding`` in keys. Unset in
every real deployment; a test sets it on a process it starts and kills.
"""

from __future__ import annotations

import asyncio
import os

_CRASH_AT = os.environ.get("CG_CRASH_AT", "")


def crash_point(name: str) -> None:
    if _CRASH_AT and name == _CRASH_AT:
        os._exit(137)


_HOLD_AT = os.environ.get("CG_HOLD_AT", "")


async def hold_point(name: str) -> None:
    """``CG_HOLD_AT=<point>`` (read once at start): the operation that reaches that point
    waits there for ever (until cancelled), e.g. ``settle:before_send`` in the proxy
    holds every settlement back, so a test can kill the process with work outstanding."""
    if _HOLD_AT and name == _HOLD_AT:
        await asyncio.Event().wait()

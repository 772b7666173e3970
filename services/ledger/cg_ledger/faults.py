"""Crash points for the crash tests, and nothing else.

``CG_LEDGER_CRASH_AT=<point>`` (read once at start) makes the process exit at once,
with no cleanup, when it reaches that point: ``<op>:before_commit`` (inside the
transaction), ``<op>:after_commit`` (committed, reply not sent). Unset in every real
deployment; a test sets it on the ledger process it starts and kills.
"""

from __future__ import annotations

import os

_CRASH_AT = os.environ.get("CG_LEDGER_CRASH_AT", "")


def crash_point(name: str) -> None:
    if _CRASH_AT and _CRASH_AT == name:
        os._exit(137)

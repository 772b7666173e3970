"""Runs the whole Creditgate stack as local processes: ``make run`` and the
integration tests both use it, so tests start exactly what a developer runs.

- ``procs``: one supervised process (start, readiness, logs, stop).
- ``stack``: nats-server + keys + ledger + mock upstream + proxy + worker + bff.
- ``seed``: the demo partner, its credits and the demo key (idempotent).
- ``certs``: with ``StackConfig(mtls=True)``, the certificates (``make certs``) and their use.
- ``__main__``: ``make run``.
"""

from cg_devstack.procs import Proc, free_port
from cg_devstack.stack import Stack, StackConfig

__all__ = ["Proc", "Stack", "StackConfig", "free_port"]

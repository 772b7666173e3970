"""The stack for a test module, on SQLite or on fresh PostgreSQL databases: its own
(``stack_on``) or one shared with the other modules of the session that ask for the same
services and settings (``shared_stack``)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cg_devstack import Stack, StackConfig
from cg_devstack.stack import ORDER
from support.postgres import PgServer

KEYS_AND_LEDGER = ("nats", "ledger", "keys")


@contextlib.contextmanager
def _stack(pg: PgServer | None, services: tuple[str, ...], env: dict | None) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="cg-stack-") as var, contextlib.ExitStack() as dbs:
        keys_db = ledger_db = bff_db = ""
        if pg is not None:
            keys_db = dbs.enter_context(pg.database("keys"))
            ledger_db = dbs.enter_context(pg.database("ledger"))
            bff_db = dbs.enter_context(pg.database("bff"))
        config = StackConfig(
            var_dir=Path(var), keys_db=keys_db, ledger_db=ledger_db, bff_db=bff_db, services=services, env=env or {}
        )
        with Stack(config) as stack:
            yield stack


@contextlib.contextmanager
def stack_on(request, services: tuple[str, ...] = ORDER, env: dict | None = None) -> Iterator[Stack]:
    """For a fixture parametrized with ``params=["sqlite", "postgres"]``: starts these
    services on that database kind, stops them, then drops the databases."""
    pg = request.getfixturevalue("pg_server") if request.param == "postgres" else None
    with _stack(pg, services, env) as stack:
        yield stack


class StackPool:
    """Stacks on one database kind kept running for the test session (in one xdist worker),
    one per set of services and settings, so that the modules asking for the same one start
    it once. At most ``size`` are kept, the least recently asked for stopped first (an idle
    stack still costs a little CPU). A stack found with a process no longer running (a module
    stopped a service and failed before it started it again) is stopped and started afresh."""

    def __init__(self, pg: PgServer | None = None, size: int = 3) -> None:
        self._pg, self._size = pg, size
        self._stacks: dict[str, tuple[Stack, contextlib.ExitStack]] = {}  # least recently asked for first
        _POOLS.append(self)

    def get(self, services: tuple[str, ...], env: dict | None) -> Stack:
        name = repr((services, sorted((s, sorted(e.items())) for s, e in (env or {}).items())))
        if name in self._stacks:
            stack, running = self._stacks.pop(name)
            if all(stack.procs[service].running for service in services):
                self._stacks[name] = (stack, running)
                return stack
            running.close()
        while len(self._stacks) >= self._size:
            self._stacks.pop(next(iter(self._stacks)))[1].close()
        running = contextlib.ExitStack()
        # a copy of env: a module may change its stack's settings for a restart (and put them back)
        stack = running.enter_context(_stack(self._pg, services, {s: dict(e) for s, e in (env or {}).items()}))
        self._stacks[name] = (stack, running)
        return stack

    def close(self) -> None:
        """Stops them all at once: each waits seconds for its processes to stop gracefully."""
        stacks, self._stacks = list(self._stacks.values()), {}
        with ThreadPoolExecutor(max(1, len(stacks))) as pool:
            for stopped in [pool.submit(running.close) for _, running in stacks]:
                stopped.result()


_POOLS: list[StackPool] = []


def stop_shared_stacks() -> None:
    """Stops every shared stack of this process (this xdist worker): a module marked
    ``alone`` gets the worker's share of the machine to itself. The pools stay usable: a
    later module that asks for a stack starts it again."""
    for pool in _POOLS:
        pool.close()


def shared_stack(request, services: tuple[str, ...] = ORDER, env: dict | None = None) -> Stack:
    """Like ``stack_on``, but the stack is the session's one with these services and settings
    on that database kind (``stack_pool_sqlite`` / ``stack_pool_postgres`` in tests/conftest.py),
    started by the first module that asks for it and stopped at the end of the session. For
    modules whose tests do not depend on a fresh stack: they make their own tenants and keys,
    and look at nothing stack-wide (every account, a service's counters) that another module's
    leftovers could move; a module that stops a service starts it again."""
    pool: StackPool = request.getfixturevalue(f"stack_pool_{request.param}")
    return pool.get(services, env)

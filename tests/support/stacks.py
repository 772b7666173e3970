"""The stack for a test module, on SQLite or on fresh PostgreSQL databases."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cg_devstack import Stack, StackConfig
from cg_devstack.stack import ORDER

KEYS_AND_LEDGER = ("nats", "ledger", "keys")


@contextlib.contextmanager
def stack_on(request, services: tuple[str, ...] = ORDER, env: dict | None = None) -> Iterator[Stack]:
    """For a fixture parametrized with ``params=["sqlite", "postgres"]``: starts these
    services on that database kind, stops them, then drops the databases."""
    with tempfile.TemporaryDirectory(prefix="cg-stack-") as var, contextlib.ExitStack() as dbs:
        keys_db = ledger_db = bff_db = ""
        if request.param == "postgres":
            pg = request.getfixturevalue("pg_server")
            keys_db = dbs.enter_context(pg.database("keys"))
            ledger_db = dbs.enter_context(pg.database("ledger"))
            bff_db = dbs.enter_context(pg.database("bff"))
        config = StackConfig(
            var_dir=Path(var), keys_db=keys_db, ledger_db=ledger_db, bff_db=bff_db, services=services, env=env or {}
        )
        with Stack(config) as stack:
            yield stack

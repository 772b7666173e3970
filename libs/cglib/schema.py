"""Who brings a service's database to its migration head: the service itself at start
(the default: ``make run``, the tests, compose), or, in Kubernetes, the migration Job
alone (``python -m cg_<svc>.migrate``) while the service's replicas wait for it.

Both paths end in :func:`cglib.db.migrate` (Alembic's ``upgrade head`` under an advisory
lock on PostgreSQL), so running the Job twice, or beside a service that migrates, applies
each revision once. A waiting service polls the database's revision until it is exactly
this code's head; a database that is ahead of the code (a newer release migrated it) or a
wait that runs out stops the service with a message that says what to run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from cglib.db import make_engine, migrate

log = logging.getLogger(__name__)


class SchemaNotReady(RuntimeError):
    """The database is not at this code's migration head, and the service may not migrate it."""


def _scripts(script_location: str | Path) -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    return ScriptDirectory.from_config(cfg)


def _current_heads(conn: Connection) -> set[str]:
    return set(MigrationContext.configure(conn).get_current_heads())


async def database_revisions(engine: AsyncEngine) -> set[str]:
    """The revisions the database is at (empty: never migrated)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current_heads)


async def wait_for_schema(
    engine: AsyncEngine, script_location: str | Path, *, timeout_s: float, migrate_command: str, poll_s: float = 2.0
) -> None:
    """Returns once the database is at the head of ``script_location``; raises
    :class:`SchemaNotReady` when it is ahead of the code, or still behind after ``timeout_s``."""
    scripts = _scripts(script_location)
    want = set(scripts.get_heads())
    known = {rev.revision for rev in scripts.walk_revisions()}
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            have: set[str] | None = await database_revisions(engine)
        except (OSError, SQLAlchemyError) as e:  # not reachable yet: keep waiting, saying why
            have, reason = None, f"database unreachable ({type(e).__name__})"
        if have == want:
            return
        if have is not None:
            if have - known:
                raise SchemaNotReady(
                    f"the database is at revision {sorted(have)}, which this code does not know"
                    f" (its head is {sorted(want)}): a newer release migrated it; run that release"
                )
            reason = f"database at {sorted(have) or 'no revision'}, this code needs {sorted(want)}"
        if time.monotonic() >= deadline:
            raise SchemaNotReady(
                f"{reason} after waiting {timeout_s:g} s: run the migration job ({migrate_command}),"
                " or let the service migrate at start (its MIGRATE_AT_START setting)"
            )
        log.info("waiting for the migration job", extra={"reason": reason, "migrate_command": migrate_command})
        await asyncio.sleep(poll_s)


async def prepare_schema(
    engine: AsyncEngine, script_location: str | Path, *, apply: bool, wait_s: float, migrate_command: str
) -> None:
    """At a service's start: migrate (``apply``), or wait for the migration Job to have done it."""
    if apply:
        await migrate(engine, script_location)
    else:
        await wait_for_schema(engine, script_location, timeout_s=wait_s, migrate_command=migrate_command)


async def migrate_database(dsn: str, script_location: str | Path) -> None:
    """The body of ``python -m cg_<svc>.migrate``: migrate the database at ``dsn`` to head."""
    engine = make_engine(dsn)
    try:
        await migrate(engine, script_location)
    finally:
        await engine.dispose()

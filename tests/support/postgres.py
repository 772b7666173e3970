"""A PostgreSQL server for tests, picked by one switch, in this order:

1. ``CG_TEST_PG_DSN`` (an admin DSN to an existing server): used as is.
2. Local PostgreSQL 15 binaries (``/usr/lib/postgresql/15/bin`` or ``CG_TEST_PG_BIN``):
   a throwaway cluster in a temp dir on a free loopback port (``cg_devstack.postgres``,
   which ``make run-cluster`` uses too), stopped at the end.
3. testcontainers, when a Docker engine answers.

Tests get a fresh database each (``create_database``), dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from cg_devstack.postgres import PG_BIN, PgServer, binaries_present, local_postgres, local_server

__all__ = ["PG_BIN", "PgServer", "local_postgres", "postgres_server"]


@contextlib.contextmanager
def _container_server() -> Iterator[PgServer]:
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:15", driver=None) as pg:
        yield PgServer(pg.get_connection_url())


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def postgres_server() -> Iterator[PgServer]:
    if os.environ.get("CG_TEST_PG_DSN"):
        yield PgServer(os.environ["CG_TEST_PG_DSN"])
    elif binaries_present():
        with local_server() as server:
            yield server
    elif _docker_available():
        with _container_server() as server:
            yield server
    else:
        raise RuntimeError(
            "no PostgreSQL for tests: set CG_TEST_PG_DSN, install PostgreSQL 15 "
            f"(looked in {PG_BIN}), or run a Docker engine"
        )

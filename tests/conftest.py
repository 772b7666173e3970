"""Fixtures shared by every suite. PostgreSQL is one server per test session and one
fresh database per test; it is never skipped silently (see support.postgres). The stacks
that test modules share (``support.stacks.shared_stack``) live as long as the session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from support.postgres import PgServer, postgres_server
from support.stacks import StackPool, stop_shared_stacks

# Every proxy a test starts holds budget leases (the default) but lets an idle one go after
# half a second instead of 30: "nothing pending" on an account then means every request
# settled and every lease's unused part returned, soon after the test's last request. A
# stack's own env (e.g. tests/e2e/test_leases.py) overrides this.
os.environ.setdefault("CG_PROXY_LEASE_IDLE_S", "0.5")
os.environ.setdefault("CG_PROXY_LEASE_SWEEP_S", "0.2")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def stack_pool_sqlite() -> Iterator[StackPool]:
    pool = StackPool()
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def stack_pool_postgres(pg_server: PgServer) -> Iterator[StackPool]:
    # asks for pg_server, so it is stopped before the server: its databases are dropped first
    pool = StackPool(pg_server)
    yield pool
    pool.close()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> Iterator[str]:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        with server.database() as dsn:
            yield dsn


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test that runs on PostgreSQL ``postgres`` (it asks for ``pg_server``, or
    one of its parameters is ``postgres``), so ``-m "not postgres"`` is a quick SQLite-only
    run and ``-m postgres`` the rest."""
    for item in items:
        params = getattr(item, "callspec", None)
        values = params.params.values() if params is not None else ()
        if "pg_server" in getattr(item, "fixturenames", ()) or "postgres" in values:
            item.add_marker(pytest.mark.postgres)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "alone: runs with none of its xdist worker's shared stacks beside it (a many-process fault run)",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``alone`` (a many-process fault run) starts with none of this
    worker's shared stacks running beside it (support.stacks.stop_shared_stacks)."""
    if item.get_closest_marker("alone") is not None:
        stop_shared_stacks()

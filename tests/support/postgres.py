"""A PostgreSQL server for tests, picked by one switch, in this order:

1. ``CG_TEST_PG_DSN`` (an admin DSN to an existing server): used as is.
2. Local PostgreSQL 15 binaries (``/usr/lib/postgresql/15/bin`` or ``CG_TEST_PG_BIN``):
   a throwaway cluster in a temp dir on a free loopback port, run as the ``postgres``
   user when we are root (initdb refuses root), stopped at the end.
3. testcontainers, when a Docker engine answers.

Tests get a fresh database each (``create_database``), dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from cg_devstack.procs import free_port

PG_BIN = Path(os.environ.get("CG_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PgServer:
    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn.rstrip("/")

    def dsn(self, database: str) -> str:
        base = self.admin_dsn.rsplit("/", 1)[0] if self.admin_dsn.count("/") > 2 else self.admin_dsn
        return f"{base}/{database}"

    def _admin(self, sql: str) -> None:
        import asyncio

        import asyncpg

        async def run() -> None:
            conn = await asyncpg.connect(self.dsn("postgres"))
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(run())

    def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextlib.contextmanager
    def database(self, prefix: str = "t") -> Iterator[str]:
        name = self.create_database(prefix)
        try:
            yield self.dsn(name)
        finally:
            self.drop_database(name)


def _as_postgres() -> dict:
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


class LocalPostgres:
    """A throwaway cluster from the local binaries, in a temp dir, on a free loopback port;
    ``stop`` and ``start`` again keep its data and port (a database restart, for tests of
    what services do while their database is down)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cg-pg-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.sock.mkdir()
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chown(self.sock, pw.pw_uid, pw.pw_gid)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 (the server writes to it until close())
        subprocess.run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            check=True,
            capture_output=True,
            **_as_postgres(),
        )

    @property
    def server(self) -> PgServer:
        return PgServer(f"postgresql://postgres@127.0.0.1:{self.port}/postgres")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.sock),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            **_as_postgres(),
        )
        deadline = time.monotonic() + 30
        while (
            subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]).returncode != 0
        ):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start:\n{(self.root / 'postgres.log').read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(2)  # SIGINT: fast shutdown
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def local_postgres() -> Iterator[LocalPostgres]:
    """A started ``LocalPostgres``, removed at the end."""
    pg = LocalPostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.close()


@contextlib.contextmanager
def _local_server() -> Iterator[PgServer]:
    with local_postgres() as pg:
        yield pg.server


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
    elif (PG_BIN / "initdb").exists():
        with _local_server() as server:
            yield server
    elif _docker_available():
        with _container_server() as server:
            yield server
    else:
        raise RuntimeError(
            "no PostgreSQL for tests: set CG_TEST_PG_DSN, install PostgreSQL 15 "
            f"(looked in {PG_BIN}), or run a Docker engine"
        )

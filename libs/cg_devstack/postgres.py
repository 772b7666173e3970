"""A local PostgreSQL 15 server from the Debian binaries (``/usr/lib/postgresql/15/bin``
or ``CG_TEST_PG_BIN``), for ``make run-cluster`` and the tests.

Run as the ``postgres`` user when we are root (``initdb`` and ``postgres`` refuse root);
its directory must be one that user can reach (``/tmp/...``, mode 0755). A throwaway server
(``root=None``) lives in a new temp dir removed at the end; a kept one (``root`` given)
is initialised once and found again by the next run.
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
    """A server we may create databases on, through its admin DSN."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn.rstrip("/")

    def dsn(self, database: str) -> str:
        base = self.admin_dsn.rsplit("/", 1)[0] if self.admin_dsn.count("/") > 2 else self.admin_dsn
        return f"{base}/{database}"

    def _admin(self, sql: str, fetch: bool = False) -> object:
        import asyncio

        import asyncpg  # type: ignore[import-untyped]  # no type information shipped

        async def run() -> object:
            conn = await asyncpg.connect(self.dsn("postgres"))
            try:
                return await (conn.fetchval(sql) if fetch else conn.execute(sql))
            finally:
                await conn.close()

        return asyncio.run(run())

    def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return name

    def ensure_database(self, name: str) -> str:
        """The DSN of database ``name`` (letters, digits, ``_``), created when missing."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: letters, digits and _ only")
        if not self._admin(f"SELECT 1 FROM pg_database WHERE datname = '{name}'", fetch=True):
            self._admin(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextlib.contextmanager
    def database(self, prefix: str = "t") -> Iterator[str]:
        name = self.create_database(prefix)
        try:
            yield self.dsn(name)
        finally:
            self.drop_database(name)


def binaries_present() -> bool:
    return (PG_BIN / "initdb").exists()


def _as_postgres() -> dict:
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def _chown_to_postgres(*paths: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for path in paths:
            os.chown(path, pw.pw_uid, pw.pw_gid)


class LocalPostgres:
    """A server on 127.0.0.1 (``port`` 0: a free one), its data under ``root`` (none: a
    temp dir in /tmp, removed by ``close``). ``stop`` and ``start`` again keep its data
    and port: a database restart, for tests of what services do while it is down."""

    def __init__(self, root: Path | None = None, port: int = 0, max_connections: int = 300) -> None:
        self.keep = root is not None
        self.root = Path(root).resolve() if root is not None else Path(tempfile.mkdtemp(prefix="cg-pg-", dir="/tmp"))
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.sock.mkdir(exist_ok=True)
        _chown_to_postgres(self.root, self.sock)
        self.port = port or free_port()
        self.max_connections = max_connections
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / "postgres.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (the server writes to it until close())
        if not (self.data / "PG_VERSION").exists():
            initdb = subprocess.run(
                [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync"]
                + ["-E", "UTF8", "--locale=C"],
                capture_output=True,
                text=True,
                **_as_postgres(),
            )
            if initdb.returncode != 0:
                raise RuntimeError(
                    f"initdb {self.data} failed (as root, every directory above it must be reachable by the"
                    f" postgres user):\n{initdb.stderr[-2000:]}"
                )

    @property
    def server(self) -> PgServer:
        return PgServer(f"postgresql://postgres@127.0.0.1:{self.port}/postgres")

    def start(self) -> None:
        settings = {
            "listen_addresses": "127.0.0.1",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": str(self.max_connections),
        }
        argv = [str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.sock)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        self.proc = proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, **_as_postgres())
        deadline = time.monotonic() + 30
        while (
            subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]).returncode != 0
        ):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")
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
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def local_postgres(root: Path | None = None, port: int = 0, max_connections: int = 300) -> Iterator[LocalPostgres]:
    """A started ``LocalPostgres``, stopped (and its temp dir removed) at the end."""
    pg = LocalPostgres(root, port, max_connections)
    try:
        pg.start()
        yield pg
    finally:
        pg.close()


@contextlib.contextmanager
def local_server(root: Path | None = None, port: int = 0, max_connections: int = 300) -> Iterator[PgServer]:
    """A started local server's admin handle (``local_postgres``)."""
    with local_postgres(root, port, max_connections) as pg:
        yield pg.server

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


@contextlib.contextmanager
def local_server(root: Path | None = None, port: int = 0, max_connections: int = 300) -> Iterator[PgServer]:
    """A server on 127.0.0.1 (``port`` 0: a free one), its data under ``root`` (none: a
    temp dir in /tmp, removed after), stopped at the end (SIGINT: a fast shutdown)."""
    keep = root is not None
    root = Path(root).resolve() if root is not None else Path(tempfile.mkdtemp(prefix="cg-pg-", dir="/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    data, sock = root / "data", root / "sock"
    sock.mkdir(exist_ok=True)
    _chown_to_postgres(root, sock)
    port = port or free_port()
    if not (data / "PG_VERSION").exists():
        initdb = subprocess.run(
            [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"]
            + ["--locale=C"],
            capture_output=True,
            text=True,
            **_as_postgres(),
        )
        if initdb.returncode != 0:
            raise RuntimeError(
                f"initdb {data} failed (as root, every directory above it must be reachable by the"
                f" postgres user):\n{initdb.stderr[-2000:]}"
            )
    log_path = root / "postgres.log"
    log = open(log_path, "ab")  # noqa: SIM115 (the server writes to it until it stops)
    settings = {
        "listen_addresses": "127.0.0.1",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": str(max_connections),
    }
    argv = [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sock)]
    for name, value in settings.items():
        argv += ["-c", f"{name}={value}"]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **_as_postgres())
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        yield PgServer(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    finally:
        proc.send_signal(2)  # SIGINT: fast shutdown
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)

"""Databases: an async SQLAlchemy engine from a DSN, and Alembic migrations at start.

A service owns one database. With no DSN it is a SQLite file under ``var/``; a
``postgresql://`` DSN selects PostgreSQL (asyncpg). Migrations run inside the
service's start-up, on one connection, under an advisory lock on PostgreSQL so that
replicas starting together do not race.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger(__name__)

_MIGRATION_LOCK_ID = 0x43475F4D  # "CG_M"


def async_url(dsn: str) -> str:
    """Maps a plain DSN to the async driver URL SQLAlchemy needs."""
    if dsn.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + dsn.split("://", 1)[1]
    if dsn.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + dsn[len("sqlite:///") :]
    if dsn.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        return dsn
    raise ValueError(f"unsupported database DSN scheme: {dsn.split('://', 1)[0]!r}")


# Execution option for connections that only read (``await conn.execution_options(**READ)``).
READ_ONLY = "cg_read_only"
READ = {READ_ONLY: True}


def sync_url(dsn: str) -> str:
    """Maps a DSN (plain or async) to the synchronous driver URL: pysqlite or psycopg."""
    if dsn.startswith(("postgres://", "postgresql://", "postgresql+asyncpg://")):
        return "postgresql+psycopg://" + dsn.split("://", 1)[1]
    if dsn.startswith(("sqlite:///", "sqlite+aiosqlite:///")):
        return "sqlite:///" + dsn.split(":///", 1)[1]
    raise ValueError(f"unsupported database DSN scheme: {dsn.split('://', 1)[0]!r}")


# Every SQLite connection of ours: WAL (readers never block the writer), wait up to 30 s
# for the write lock instead of failing, and enforce foreign keys.
SQLITE_PRAGMAS = ("journal_mode=WAL", "busy_timeout=30000", "foreign_keys=ON")


def _sqlite_file(url: str) -> None:
    path = url.split(":///", 1)[1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" below decide how transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        for pragma in SQLITE_PRAGMAS:
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        # Take the write lock up front: a read-then-write transaction can then
        # never fail half way with SQLITE_BUSY, and writers serialize cleanly.
        # A connection marked READ_ONLY only reads: in WAL mode a deferred BEGIN never
        # waits for (nor holds up) a writer.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_sync_engine(dsn: str, pool_size: int = 8) -> Engine:
    """A synchronous PostgreSQL engine (psycopg) on the same database, for work run in
    threads. (On SQLite the ledger's writer thread opens its own connection.)"""
    url = sync_url(dsn)
    if url.startswith("sqlite"):
        raise ValueError("make_sync_engine is for PostgreSQL; SQLite writers use one sqlite3 connection")
    return create_engine(url, pool_size=pool_size, max_overflow=0, pool_pre_ping=True)


def make_engine(dsn: str) -> AsyncEngine:
    url = async_url(dsn)
    if url.startswith("sqlite"):
        _sqlite_file(url)
        # One connection: SQLite runs one writer at a time anyway, and connections
        # competing for its lock by sleep-and-retry starve each other (the tail latency
        # this cut: docs/benchmarks.md, "One SQLite connection per engine").
        engine = create_async_engine(url, connect_args={"timeout": 30}, pool_size=1, max_overflow=0, pool_timeout=60)
        _sqlite_pragmas(engine.sync_engine)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _upgrade(conn: Connection, script_location: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", script_location)
    cfg.attributes["connection"] = conn
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
    command.upgrade(cfg, "head")


async def migrate(engine: AsyncEngine, script_location: str | Path) -> None:
    """Applies the service's Alembic migrations up to head."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, str(script_location))
    log.info("migrations applied", extra={"db": engine.url.render_as_string(hide_password=True)})


def run_migrations_env(target_metadata: Any) -> None:
    """Body of every service's ``migrations/env.py``: run on the connection handed in
    by :func:`migrate` (online mode only; we never generate SQL scripts offline)."""
    conn = context.config.attributes.get("connection")
    if conn is None:
        raise RuntimeError("migrations run through cglib.db.migrate(), which passes a connection")
    context.configure(
        connection=conn,
        target_metadata=target_metadata,
        render_as_batch=conn.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()

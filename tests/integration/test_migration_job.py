"""The Kubernetes migration Job's command (`python -m cg_<svc>.migrate`) and services that
wait for it (`CG_<SVC>_MIGRATE_AT_START=false`), as real processes on SQLite and PostgreSQL.

The Job must be safe to run twice, and two at once; a service that does not migrate waits
until its database is at its code's head, then serves; one that waits in vain stops with a
message saying what to run, not a stack trace.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import cg_bff
import cg_keys
import cg_ledger
from cg_devstack.procs import free_port
from cglib.db import make_engine
from cglib.healthcheck import check_grpc
from cglib.schema import SchemaNotReady, database_revisions, migrate_database, wait_for_schema

MIGRATIONS = {
    "keys": Path(cg_keys.__file__).parent / "migrations",
    "ledger": Path(cg_ledger.__file__).parent / "migrations",
    "bff": Path(cg_bff.__file__).parent / "migrations",
}


def env_for(service: str, db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CG_")}
    env[f"CG_{service.upper()}_DATABASE_URL"] = db_url
    env.update(extra)
    return env


def migrate(service: str, db_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", f"cg_{service}.migrate"],
        env=env_for(service, db_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout_s: float = 90) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout_s)
    return proc.returncode, out


def revisions(db_url: str) -> set[str]:
    async def read() -> set[str]:
        engine = make_engine(db_url)
        try:
            return await database_revisions(engine)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def head(service: str) -> set[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS[service]))
    return set(ScriptDirectory.from_config(cfg).get_heads())


def test_the_job_migrates_twice_at_once_and_again(db_url: str) -> None:
    """Two Jobs at once (one waits for the other's lock, then finds the head), then again."""
    first, second = migrate("ledger", db_url), migrate("ledger", db_url)
    for proc in (first, second):
        code, out = finish(proc)
        assert code == 0, out
    assert revisions(db_url) == head("ledger")
    asyncio.run(migrate_database(db_url, MIGRATIONS["ledger"]))  # the command's body: at head, a no-op
    assert revisions(db_url) == head("ledger")


def test_each_database_owner_has_the_job_command(tmp_path: Path) -> None:
    urls = {service: f"sqlite:///{tmp_path / (service + '.db')}" for service in ("keys", "bff")}
    procs = {service: migrate(service, url) for service, url in urls.items()}
    for service, proc in procs.items():
        code, out = finish(proc)
        assert code == 0, out
        assert revisions(urls[service]) == head(service)


@pytest.fixture
def ledger_port() -> Iterator[int]:
    yield free_port()


def start_ledger(db_url: str, port: int, wait_s: float) -> subprocess.Popen[str]:
    env = env_for(
        "ledger",
        db_url,
        CG_LEDGER_PORT=str(port),
        CG_LEDGER_METRICS_PORT=str(free_port()),
        CG_LEDGER_MIGRATE_AT_START="false",
        CG_LEDGER_SCHEMA_WAIT_S=str(wait_s),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "cg_ledger"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_a_service_waits_for_the_job_then_serves(tmp_path: Path, ledger_port: int) -> None:
    db_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    service = start_ledger(db_url, ledger_port, wait_s=60)
    try:
        time.sleep(3)  # started and polling the empty database
        assert service.poll() is None, "the service stopped instead of waiting"
        assert not check_grpc(f"127.0.0.1:{ledger_port}", timeout_s=0.5), "it serves before its schema exists"
        assert revisions(db_url) == set(), "the service migrated its database itself"
        asyncio.run(migrate_database(db_url, MIGRATIONS["ledger"]))  # what the Job does
        deadline = time.monotonic() + 90  # generous: a loaded machine starts Python slowly
        while not check_grpc(f"127.0.0.1:{ledger_port}", timeout_s=0.5):
            assert service.poll() is None and time.monotonic() < deadline, "not serving after the migration"
            time.sleep(0.3)
    finally:
        service.terminate()
        service.communicate(timeout=30)


def test_a_service_that_waits_in_vain_says_what_to_run(tmp_path: Path, ledger_port: int) -> None:
    service = start_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", ledger_port, wait_s=1)
    code, out = finish(service, timeout_s=60)
    assert code != 0
    assert "run the migration job (python -m cg_ledger.migrate)" in out, out
    assert "Traceback" not in out, out


async def test_a_database_ahead_of_the_code_stops_the_wait_at_once(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    await migrate_database(db_url, MIGRATIONS["ledger"])
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_from_a_newer_release'")
        started = time.monotonic()
        with pytest.raises(SchemaNotReady, match="a newer release migrated it"):
            await wait_for_schema(
                engine, MIGRATIONS["ledger"], timeout_s=30, migrate_command="python -m cg_ledger.migrate"
            )
        assert time.monotonic() - started < 5
    finally:
        await engine.dispose()

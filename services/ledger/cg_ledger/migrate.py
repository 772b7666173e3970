"""``python -m cg_ledger.migrate``: applies the ledger database's migrations (``CG_LEDGER_DATABASE_URL``), then exits.

The Kubernetes migration Job runs it (deploy/k8s/base/migrate-job.yaml) while the ledger
replicas, started with ``CG_LEDGER_MIGRATE_AT_START=false``, wait for the database to
reach this code's head (cglib.schema). Safe to run twice, or beside itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cg_ledger.settings import Settings
from cglib.logs import setup_logging
from cglib.schema import migrate_database

MIGRATIONS = Path(__file__).parent / "migrations"
COMMAND = "python -m cg_ledger.migrate"

if __name__ == "__main__":
    settings = Settings()
    setup_logging("ledger-migrate", settings.log_level)
    asyncio.run(migrate_database(settings.database_url, MIGRATIONS))

"""``python -m cg_bff.migrate``: applies the bff database's migrations (``CG_BFF_DATABASE_URL``), then exits.

The Kubernetes migration Job runs it (deploy/k8s/base/migrate-job.yaml) while the bff
replicas, started with ``CG_BFF_MIGRATE_AT_START=false``, wait for the database to
reach this code's head (cglib.schema). Safe to run twice, or beside itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cg_bff.settings import Settings
from cglib.logs import setup_logging
from cglib.schema import migrate_database

MIGRATIONS = Path(__file__).parent / "migrations"
COMMAND = "python -m cg_bff.migrate"

if __name__ == "__main__":
    settings = Settings()
    setup_logging("bff-migrate", settings.log_level)
    asyncio.run(migrate_database(settings.database_url, MIGRATIONS))

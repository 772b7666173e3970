"""``python -m cg_keys.migrate``: applies the keys database's migrations (``CG_KEYS_DATABASE_URL``), then exits.

The Kubernetes migration Job runs it (deploy/k8s/base/migrate-job.yaml) while the keys
replicas, started with ``CG_KEYS_MIGRATE_AT_START=false``, wait for the database to
reach this code's head (cglib.schema). Safe to run twice, or beside itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cg_keys.settings import Settings
from cglib.logs import setup_logging
from cglib.schema import migrate_database

MIGRATIONS = Path(__file__).parent / "migrations"
COMMAND = "python -m cg_keys.migrate"

if __name__ == "__main__":
    settings = Settings()
    setup_logging("keys-migrate", settings.log_level)
    asyncio.run(migrate_database(settings.database_url, MIGRATIONS))

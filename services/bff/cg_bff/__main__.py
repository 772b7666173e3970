"""Entry point: ``python -m cg_bff``."""

from __future__ import annotations

import uvicorn

from cg_bff.app import create_app
from cg_bff.settings import Settings
from cglib import tracing
from cglib.logs import setup_logging
from cglib.tls import from_env_or_exit

if __name__ == "__main__":
    settings = Settings()
    setup_logging("bff", settings.log_level)
    tracing.setup("bff")  # when an exporter is configured: its gRPC calls carry the trace
    uvicorn.run(
        create_app(settings, tls=from_env_or_exit("bff")),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )

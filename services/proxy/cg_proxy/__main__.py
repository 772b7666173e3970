"""Entry point: ``python -m cg_proxy``."""

from __future__ import annotations

import uvicorn

from cg_proxy.app import create_app
from cg_proxy.settings import Settings
from cglib.logs import setup_logging

if __name__ == "__main__":
    settings = Settings()
    setup_logging("proxy", settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
    )

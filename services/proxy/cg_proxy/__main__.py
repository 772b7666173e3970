"""Entry point: ``python -m cg_proxy``."""

from __future__ import annotations

import uvicorn

from cg_proxy.app import create_app
from cg_proxy.settings import Settings
from cg_proxy.upstream import fallback_chains
from cglib.logs import setup_logging

if __name__ == "__main__":
    settings = Settings()
    setup_logging("proxy", settings.log_level)
    try:
        fallback_chains(settings)
    except ValueError as e:  # a fallback chain that names no upstream or loops: refuse to start
        raise SystemExit(f"cg_proxy: invalid upstream settings: {e}") from None
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

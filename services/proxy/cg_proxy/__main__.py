"""Entry point: ``python -m cg_proxy``.

``CG_PROXY_WORKERS`` worker processes (default: one per core) serve the one port. With
one, the app runs in this process. With more, uvicorn's supervisor binds the port once
and hands the listening socket to each worker it spawns (each builds the app with
``app.from_env``: its own gRPC channels, NATS connection, outbox and journal, see
``cg_proxy.slots``), and starts a worker again if one dies. Chosen over each worker
binding with SO_REUSEPORT: a port bound once cannot be taken over by a stray second
proxy started by mistake, and restarting a dead worker (which then settles what its
journal holds) comes with the supervisor. The price: the kernel does not balance a
shared socket's accepts, so a few keep-alive clients may land unevenly on the workers.

With more than one worker, their Prometheus metrics go through files in one directory
(``cglib.multiproc``, prepared here before any worker starts), so the ``/metrics`` of
any worker shows the sum of all of them.
"""

from __future__ import annotations

from typing import Any

import uvicorn

from cg_proxy.app import create_app
from cg_proxy.server_protocol import CorkedHttpToolsProtocol
from cg_proxy.settings import Settings
from cg_proxy.upstream import fallback_chains
from cglib import multiproc, tracing
from cglib.logs import setup_logging
from cglib.tls import from_env_or_exit

if __name__ == "__main__":
    settings = Settings()
    setup_logging("proxy", settings.log_level)
    try:
        fallback_chains(settings)
    except ValueError as e:  # a fallback chain that names no upstream or loops: refuse to start
        raise SystemExit(f"cg_proxy: invalid upstream settings: {e}") from None
    tls = from_env_or_exit("proxy")  # checked here too: with several workers, before any starts
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "proxy_headers": False,  # nothing reads the client address; parsing X-Forwarded-For costs every request
        "loop": "uvloop",
        "http": CorkedHttpToolsProtocol,  # httptools, a response's head and body in one write
        "lifespan": "on",
        "timeout_graceful_shutdown": int(settings.shutdown_grace_s),
    }
    if settings.workers == 1:
        tracing.setup("proxy")  # each of several workers does it itself (app.from_env)
        uvicorn.run(create_app(settings, tls=tls, own_process=True), **options)
    else:
        multiproc.prepare(settings.metrics_base())  # before the workers are spawned: they inherit it
        uvicorn.run("cg_proxy.app:from_env", factory=True, workers=settings.workers, **options)

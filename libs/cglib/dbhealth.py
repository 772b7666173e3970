"""gRPC health that follows the database: a service whose database is unreachable says
NOT_SERVING (a load balancer or Kubernetes then sends it no calls it would fail) and
SERVING again once the database answers.

    task = asyncio.create_task(follow_database(health, SERVICE_NAMES, ping, every_s))

``ping`` runs one trivial query (``SELECT 1``) through the service's own connections.
A failure is confirmed by a second try at once: a pooled connection the server dropped
(a restart) fails the first and is replaced for the second, so only a database that is
really down flips the status. Each check is bounded by ``timeout_s`` (a database that
hangs counts as down). The status changes only on a transition, logged once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from grpc_health.v1 import health, health_pb2
from prometheus_client import Gauge

log = logging.getLogger(__name__)

DATABASE_UP = Gauge("cg_database_up", "1 while the service's database answers its health check, else 0")

Ping = Callable[[], Awaitable[object]]


async def _answers(ping: Ping, timeout_s: float) -> bool:
    for _ in range(2):
        try:
            await asyncio.wait_for(ping(), timeout=timeout_s)
            return True
        except Exception:  # any failure is "down"; the second try confirms it
            continue
    return False


async def follow_database(
    health_servicer: health.aio.HealthServicer,
    service_names: Iterable[str],
    ping: Ping,
    every_s: float = 2.0,
    timeout_s: float = 2.0,
) -> None:
    """Checks the database every ``every_s`` and sets the health of the server (``""``)
    and of ``service_names`` to match; runs until cancelled. Assumes SERVING to begin with
    (``cglib.grpc_server.serve`` sets it)."""
    names = ["", *service_names]
    serving = True
    DATABASE_UP.set(1)
    while True:
        await asyncio.sleep(every_s)
        up = await _answers(ping, timeout_s)
        DATABASE_UP.set(1 if up else 0)
        if up == serving:
            continue
        serving = up
        status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in names:
            await health_servicer.set(name, status)
        if up:
            log.info("database reachable again: SERVING")
        else:
            log.error("database unreachable: NOT_SERVING until it answers")

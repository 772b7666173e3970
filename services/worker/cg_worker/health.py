"""The worker's readiness: connected to NATS, and every durable consumer it runs
subscribed. Served as ``/readyz`` on its metrics port (``cglib.metrics.serve_metrics``):
200 when all hold, 503 (with which part fails) otherwise, so an orchestrator sees a
worker that consumes nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from nats.aio.client import Client


class ConsumerHealth:
    def __init__(self, durables: Iterable[str]) -> None:
        self._lock = threading.Lock()  # read from the metrics server's thread
        self._subscribed = dict.fromkeys(durables, False)
        self.nc: Client | None = None

    def subscribed(self, durable: str) -> None:
        with self._lock:
            self._subscribed[durable] = True

    def unsubscribed(self, durable: str) -> None:
        with self._lock:
            self._subscribed[durable] = False

    def check(self) -> tuple[bool, dict[str, str]]:
        nc = self.nc
        connected = nc is not None and nc.is_connected
        with self._lock:
            checks = {d: "subscribed" if s else "not_subscribed" for d, s in self._subscribed.items()}
        checks["nats"] = "connected" if connected else "not_connected"
        return connected and all(self._subscribed.values()), checks

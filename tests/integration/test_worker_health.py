"""The worker's /readyz (on its metrics port) shows its consumers connected: 503 while
NATS is not there (at start, or gone later), 200 once NATS is up and every durable
consumer is subscribed, naming each part; /healthz only says the process answers."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx

from cg_devstack import Stack, StackConfig
from cg_worker.__main__ import DURABLES


def readyz(url: str) -> tuple[int, dict[str, str]]:
    try:
        resp = httpx.get(f"{url}/readyz", timeout=2)
    except httpx.TransportError:
        return -1, {}
    return resp.status_code, resp.json()["checks"]


def wait_for(url: str, status: int, timeout_s: float = 30) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while (got := readyz(url))[0] != status:
        assert time.monotonic() < deadline, f"/readyz never answered {status}: last {got}"
        time.sleep(0.05)
    return got[1]


def test_readyz_follows_nats_and_the_consumers():
    with tempfile.TemporaryDirectory(prefix="cg-worker-health-") as var:
        stack = Stack(StackConfig(var_dir=Path(var), services=("nats",)))
        try:
            # the worker first, NATS not there yet: its port answers, not ready
            worker = stack._build("worker")
            stack.procs["worker"] = worker
            worker.start()
            url = f"http://127.0.0.1:{stack.ports['worker_metrics']}"
            checks = wait_for(url, 503)
            assert checks["nats"] == "not_connected"
            assert {checks[d] for d in DURABLES} == {"not_subscribed"}
            assert httpx.get(f"{url}/healthz", timeout=2).status_code == 200, "alive all the same"

            stack.start_service("nats")
            checks = wait_for(url, 200)
            assert checks == {**dict.fromkeys(DURABLES, "subscribed"), "nats": "connected"}
            assert "cg_worker_events_total" in httpx.get(f"{url}/metrics", timeout=2).text

            stack.stop_service("nats")  # gone: not ready, saying why
            assert wait_for(url, 503, timeout_s=10)["nats"] == "not_connected"
            stack.start_service("nats")  # back (same store): the client reconnects
            wait_for(url, 200)
        finally:
            stack.stop()

"""Entry point: ``python -m cg_worker``."""

from __future__ import annotations

import asyncio
import logging
import signal

from cg_worker.consumer import run_usage_consumer
from cg_worker.handlers import handle_usage
from cg_worker.settings import Settings
from cglib import natsx
from cglib.logs import setup_logging
from cglib.metrics import serve_metrics

log = logging.getLogger("cg_worker")


async def main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics_port = serve_metrics(settings.host, settings.metrics_port)
    nc = await natsx.connect(settings.nats_url, "worker")
    log.info("worker started", extra={"metrics_port": metrics_port})
    try:
        # The current batch finishes (handled and acked) before the loop sees `stop`.
        await run_usage_consumer(nc, settings.durable_name, settings.batch_size, handle_usage, stop)
    finally:
        await nc.drain()
        log.info("worker stopped")


if __name__ == "__main__":
    settings = Settings()
    setup_logging("worker", settings.log_level)
    asyncio.run(main(settings))

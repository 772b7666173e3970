"""Entry point: ``python -m cg_worker``."""

from __future__ import annotations

import asyncio
import logging
import signal

from cg_worker.consumer import run_consumer
from cg_worker.handlers import Handlers
from cg_worker.rules import Rules
from cg_worker.settings import Settings
from cglib import natsx
from cglib.grpc_client import insecure_channel
from cglib.logs import setup_logging
from cglib.metrics import serve_metrics
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2_grpc

log = logging.getLogger("cg_worker")


async def main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    keys_channel, ledger_channel = insecure_channel(settings.keys_addr), insecure_channel(settings.ledger_addr)
    rules = Rules(
        keys_pb2_grpc.KeysServiceStub(keys_channel),
        ledger_pb2_grpc.LedgerServiceStub(ledger_channel),
        settings.rpc_timeout_s,
        settings.deposit_line_credits,
    )
    handlers = Handlers(rules)
    nc = await natsx.connect(settings.nats_url, "worker")
    js = nc.jetstream()
    for ensure in (natsx.ensure_usage_stream, natsx.ensure_ledger_stream, natsx.ensure_keys_stream):
        for attempt in range(20):
            try:
                await ensure(js)
                break
            except Exception as e:
                log.warning("stream not declared yet", extra={"error": repr(e), "attempt": attempt})
                await asyncio.sleep(0.5)
    metrics_port = serve_metrics(settings.host, settings.metrics_port)
    log.info("worker started", extra={"metrics_port": metrics_port})
    # usage events come one per request: they linger into batches; the others are rare
    consumers = [
        (natsx.USAGE_STREAM, "worker-usage", events_pb2.UsageEvent, handlers.usage, settings.linger_s),
        (natsx.LEDGER_STREAM, "worker-balances", events_pb2.BalanceChanged, handlers.balances, 0.0),
        (natsx.KEYS_STREAM, "worker-keys", events_pb2.KeyChanged, handlers.key_changes, 0.0),
    ]
    try:
        # each batch finishes (handled and acked) before its loop sees `stop`
        await asyncio.gather(
            *(
                run_consumer(nc, stream, durable, kind, handler, stop, settings.batch_size, settings.ack_wait_s, linger)
                for stream, durable, kind, handler, linger in consumers
            )
        )
    finally:
        await nc.drain()
        await keys_channel.close()
        await ledger_channel.close()
        log.info("worker stopped")


if __name__ == "__main__":
    settings = Settings()
    setup_logging("worker", settings.log_level)
    asyncio.run(main(settings))

"""Entry point: ``python -m cg_worker``."""

from __future__ import annotations

import asyncio
import logging
import signal

from nats.aio.client import Client

from cg_worker.consumer import run_consumer, single, usage_events
from cg_worker.handlers import Handlers
from cg_worker.health import ConsumerHealth
from cg_worker.rules import Rules
from cg_worker.settings import Settings
from cg_worker.webhook_delivery import DURABLE as WEBHOOK_JOBS_DURABLE
from cg_worker.webhook_delivery import Deliverer
from cg_worker.webhook_events import WebhookEvents
from cglib import gc_tuning, natsx, tracing
from cglib.grpc_client import channel
from cglib.logs import setup_logging
from cglib.metrics import serve_metrics
from cglib.retry import Stopped, retrying
from cglib.tls import Tls, from_env_or_exit
from creditgate.bff.v1 import bff_pb2_grpc
from creditgate.events.v1 import events_pb2 as epb
from creditgate.keys.v1 import keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2_grpc

log = logging.getLogger("cg_worker")
# the durable consumers every worker runs: /readyz is 503 until each is subscribed
USAGE_DURABLE, BALANCES_DURABLE, KEYS_DURABLE = "worker-usage", "worker-balances", "worker-keys"
DURABLES = (USAGE_DURABLE, BALANCES_DURABLE, KEYS_DURABLE, WEBHOOK_JOBS_DURABLE)


async def main(settings: Settings, tls: Tls | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    keys_channel, ledger_channel = channel(settings.keys_addr, tls), channel(settings.ledger_addr, tls)
    bff_channel = channel(settings.bff_addr, tls)
    keys, ledger = keys_pb2_grpc.KeysServiceStub(keys_channel), ledger_pb2_grpc.LedgerServiceStub(ledger_channel)
    webhooks = WebhookEvents(
        keys,
        ledger,
        settings.rpc_timeout_s,
        settings.low_budget_percent,
        settings.balance_low_credits,
        settings.deposit_line_credits,
    )
    rules = Rules(keys, ledger, settings.rpc_timeout_s, settings.deposit_line_credits, webhooks)
    handlers = Handlers(rules, webhooks)
    deliverer = Deliverer(settings, bff_pb2_grpc.WebhookServiceStub(bff_channel))
    health = ConsumerHealth(DURABLES)
    # from the start: /readyz says "not connected" while NATS is being waited for
    metrics_port = serve_metrics(settings.host, settings.metrics_port, ready=health.check)

    async def connect() -> Client:
        """NATS, with the streams the worker consumes and publishes to declared (idempotently)."""
        nc = await natsx.connect(settings.nats_url, "worker")
        try:
            js = nc.jetstream()
            for ensure in (
                natsx.ensure_usage_stream,
                natsx.ensure_ledger_stream,
                natsx.ensure_keys_stream,
                natsx.ensure_webhooks_stream,
            ):
                await ensure(js)
        except BaseException:
            await nc.close()
            raise
        return nc

    try:  # nothing to do without the streams: wait for them (until stopped), saying so
        nc = await retrying(connect, what="nats connect and stream declaration", stop=stop, first_delay_s=0.5)
    except Stopped:
        await keys_channel.close()
        await ledger_channel.close()
        await bff_channel.close()
        return
    webhooks.attach(nc)
    health.nc = nc
    gc_tuning.after_startup()
    log.info("worker started", extra={"metrics_port": metrics_port})
    batch, ack_wait = settings.batch_size, settings.ack_wait_s
    try:
        # each batch finishes (handled and acked) before its loop sees `stop`; usage
        # events come one per request: they linger into batches; the others are rare
        await asyncio.gather(
            run_consumer(
                nc,
                natsx.USAGE_STREAM,
                USAGE_DURABLE,
                usage_events,
                handlers.usage,
                stop,
                batch,
                ack_wait,
                settings.linger_s,
                health=health,
            ),
            run_consumer(
                nc,
                natsx.LEDGER_STREAM,
                BALANCES_DURABLE,
                single(epb.BalanceChanged),
                handlers.balances,
                stop,
                batch,
                ack_wait,
                health=health,
            ),
            run_consumer(
                nc,
                natsx.KEYS_STREAM,
                KEYS_DURABLE,
                single(epb.KeyChanged),
                handlers.key_changes,
                stop,
                batch,
                ack_wait,
                health=health,
            ),
            deliverer.run(nc, stop, health),
        )
    finally:
        await nc.drain()
        await deliverer.close()
        await keys_channel.close()
        await ledger_channel.close()
        await bff_channel.close()
        log.info("worker stopped")


if __name__ == "__main__":
    settings = Settings()
    setup_logging("worker", settings.log_level)
    tracing.setup("worker")  # when an exporter is configured; before any gRPC channel or server
    try:
        asyncio.run(main(settings, from_env_or_exit("worker")))
    finally:
        tracing.shutdown()

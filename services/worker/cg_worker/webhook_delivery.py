"""Webhook deliveries: a durable JetStream consumer of the BFF's ``WebhookJob``s
(``webhooks.jobs.>``, stream WEBHOOKS), one POST per attempt.

For each job: claim the delivery from the BFF (``WebhookService.ClaimDelivery``: a lease,
the URL, the secrets, the body; only the lease holder attempts, so a duplicated or
redelivered job makes no second POST), POST the body signed per Standard Webhooks
(``webhook-id`` = the event id, the same on every attempt; ``webhook-timestamp`` = this
attempt's time; ``webhook_signing``), then report the attempt (``RecordAttempt``) and:

- a 2xx: succeeded, acked;
- anything else (another status, a timeout, a refused connection, a redirect: never
  followed): retried, the job nak'ed with the next delay of an exponential backoff
  (``webhook_retry_first_s`` x ``webhook_retry_factor`` per attempt, at most
  ``webhook_retry_max_s``, 10% jitter; a longer ``Retry-After`` on a 429 or 503 is
  honoured), until ``webhook_max_attempts``: then dead-lettered (and on a 410 Gone at once),
  acked;
- a job the BFF says to skip (done, superseded by a redeliver, gone, endpoint disabled):
  acked; one another worker holds: nak'ed until its lease ends.

The BFF unreachable: the job is nak'ed and tried again shortly (no attempt counted). The
durable consumer splits jobs between replicas; each replica attempts up to
``webhook_concurrency`` at once. The address is checked at every attempt: the host must
resolve to public addresses only (``cglib.egress``), through the resolver the connection
itself uses, so DNS rebinding after registration is refused, unless
``webhooks_allow_private``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import time
from dataclasses import dataclass

import aiohttp
import grpc
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter

from cg_worker.health import ConsumerHealth
from cg_worker.settings import Settings
from cg_worker.webhook_signing import headers as signature_headers
from cglib import egress, natsx
from cglib.grpc_client import TRANSIENT
from cglib.retry import Stopped, retrying
from creditgate.bff.v1 import bff_pb2, bff_pb2_grpc

log = logging.getLogger(__name__)

DURABLE = "worker-webhook-jobs"
ATTEMPTS = Counter("cg_worker_webhook_attempts_total", "Webhook delivery attempts", ["outcome"])
EXCERPT = 500
BFF_RETRY_S = 2.0
REPORT_GIVE_UP_S = 30.0
USER_AGENT = "Creditgate-Webhooks/1"


class PublicOnlyResolver(AbstractResolver):
    """Resolves like the default, and refuses a host any of whose addresses is not
    public (``egress.UnsafeUrl``): the connection is made to these very addresses."""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        for r in found:
            why = egress.address_refusal(ipaddress.ip_address(r["host"]))
            if why is not None:
                raise egress.UnsafeUrl(f"the host {host} resolves to a {why} address ({r['host']})")
        return found

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True)
class Result:
    status: int = 0  # 0: no answer
    error: str = ""
    excerpt: str = ""
    duration_ms: int = 0
    retry_after_s: float = 0.0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def backoff_s(settings: Settings, attempt: int) -> float:
    """The delay after failed attempt ``attempt`` (1-based)."""
    base = settings.webhook_retry_first_s * settings.webhook_retry_factor ** (attempt - 1)
    return min(base, settings.webhook_retry_max_s) * random.uniform(0.9, 1.1)


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0  # an HTTP date: the backoff decides


class Deliverer:
    def __init__(self, settings: Settings, bff: bff_pb2_grpc.WebhookServiceAsyncStub) -> None:
        self.settings = settings
        self.bff = bff
        token = settings.bff_token.get_secret_value()
        self.metadata = (("x-cg-internal-token", token),) if token else ()
        self.http: aiohttp.ClientSession | None = None
        # how long a claim holds the delivery: the attempt, the report, and margin
        self.lease_s = settings.webhook_timeout_s + 2 * settings.rpc_timeout_s + 10

    def _session(self) -> aiohttp.ClientSession:
        if self.http is None:
            private = self.settings.webhooks_allow_private
            connector = aiohttp.TCPConnector(
                resolver=None if private else PublicOnlyResolver(), use_dns_cache=False, limit=200
            )
            self.http = aiohttp.ClientSession(connector=connector, trust_env=False, headers={"user-agent": USER_AGENT})
        return self.http

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()

    # -- the consumer ---------------------------------------------------------------------

    async def run(self, nc: Client, stop: asyncio.Event, health: ConsumerHealth | None = None) -> None:
        js = nc.jetstream()

        async def declare() -> JetStreamContext.PullSubscription:
            await natsx.ensure_webhooks_stream(js)
            await js.add_consumer(
                natsx.WEBHOOKS_STREAM,
                ConsumerConfig(
                    durable_name=DURABLE,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    filter_subject=natsx.WEBHOOK_JOBS_FILTER,
                    ack_wait=max(self.settings.ack_wait_s, self.lease_s),
                    max_deliver=-1,
                    max_ack_pending=self.settings.webhook_max_waiting,
                ),
            )
            return await js.pull_subscribe_bind(DURABLE, stream=natsx.WEBHOOKS_STREAM)

        try:
            sub = await retrying(declare, what="webhook jobs consumer declaration", stop=stop, first_delay_s=0.2)
        except Stopped:
            return
        log.info("delivering webhooks", extra={"durable": DURABLE})
        if health is not None:
            health.subscribed(DURABLE)
        try:
            while not stop.is_set():
                try:
                    msgs = await natsx.fetch_batch(sub, self.settings.webhook_concurrency, timeout=1)
                except TimeoutError:  # nothing new (nats.errors.TimeoutError is one too)
                    continue
                except Exception as e:
                    log.warning("webhook jobs fetch failed", extra={"error": repr(e)})
                    await asyncio.sleep(0.5)
                    continue
                await asyncio.gather(*(self._guarded(m) for m in msgs))
        finally:
            if health is not None:
                health.unsubscribed(DURABLE)
            await sub.unsubscribe()

    async def _guarded(self, msg: Msg) -> None:
        try:
            await self.handle(msg)
        except Exception:  # one job's surprise must not stop the others: it is tried again
            log.exception("webhook job failed; retrying", extra={"subject": msg.subject})
            with contextlib.suppress(Exception):
                await msg.nak(delay=5)

    async def handle(self, msg: Msg) -> None:
        try:
            job = bff_pb2.WebhookJob.FromString(msg.data)
        except DecodeError:
            log.error("poison webhook job dropped", extra={"subject": msg.subject})
            await msg.term()
            return
        try:
            claim = await self.bff.ClaimDelivery(
                bff_pb2.ClaimDeliveryRequest(
                    delivery_id=job.delivery_id,
                    partner_id=job.partner_id,
                    generation=job.generation,
                    lease_ms=int(self.lease_s * 1000),
                ),
                timeout=self.settings.rpc_timeout_s,
                metadata=self.metadata,
            )
        except grpc.aio.AioRpcError as e:
            if e.code() not in TRANSIENT:
                raise
            await msg.nak(delay=BFF_RETRY_S)
            return
        if claim.outcome == bff_pb2.CLAIM_OUTCOME_BUSY:
            await msg.nak(delay=max(1.0, claim.retry_after_ms / 1000))
            return
        if claim.outcome != bff_pb2.CLAIM_OUTCOME_CLAIMED:
            log.info("webhook job skipped", extra={"delivery_id": job.delivery_id, "reason": claim.reason})
            await msg.ack()
            return
        d = claim.delivery
        attempt = d.attempts + 1
        result = await self.attempt(d)
        now_ms = int(time.time() * 1000)
        if result.ok:
            outcome, delay = bff_pb2.ATTEMPT_OUTCOME_SUCCEEDED, 0.0
        elif attempt >= self.settings.webhook_max_attempts or result.status == 410:
            outcome, delay = bff_pb2.ATTEMPT_OUTCOME_DEAD, 0.0
        else:
            outcome = bff_pb2.ATTEMPT_OUTCOME_RETRYING
            delay = max(backoff_s(self.settings, attempt), min(result.retry_after_s, self.settings.webhook_retry_max_s))
        ATTEMPTS.labels(bff_pb2.AttemptOutcome.Name(outcome).removeprefix("ATTEMPT_OUTCOME_").lower()).inc()
        report = bff_pb2.RecordAttemptRequest(
            delivery_id=d.delivery_id,
            partner_id=d.partner_id,
            generation=d.generation,
            attempt=attempt,
            outcome=outcome,
            status_code=result.status,
            error=result.error[:EXCERPT],
            duration_ms=result.duration_ms,
            time_unix_ms=now_ms,
            next_attempt_unix_ms=now_ms + int(delay * 1000) if delay else 0,
            response_excerpt=result.excerpt,
        )
        try:
            recorded = await retrying(
                lambda: self.bff.RecordAttempt(report, timeout=self.settings.rpc_timeout_s, metadata=self.metadata),
                what="webhook attempt report",
                retry_on=lambda e: isinstance(e, grpc.aio.AioRpcError) and e.code() in TRANSIENT,
                give_up_after_s=REPORT_GIVE_UP_S,
                extra={"delivery_id": d.delivery_id},
            )
        except grpc.aio.AioRpcError:
            # not recorded: the lease runs out and the attempt is made again (same webhook-id)
            await msg.nak(delay=self.lease_s)
            return
        log.info(
            "webhook attempt",
            extra={
                "delivery_id": d.delivery_id,
                "event_id": d.event_id,
                "attempt": attempt,
                "status": result.status,
                "outcome": bff_pb2.AttemptOutcome.Name(outcome),
                "error": result.error,
            },
        )
        if outcome == bff_pb2.ATTEMPT_OUTCOME_RETRYING and not recorded.stale:
            await msg.nak(delay=delay)
        else:
            await msg.ack()

    # -- one attempt ----------------------------------------------------------------------

    async def attempt(self, d: bff_pb2.Delivery) -> Result:
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            egress.parse_url(d.url, self.settings.webhooks_allow_private)  # a literal address is judged here
        except egress.UnsafeUrl as e:
            return Result(error=f"refused: {e}")
        body = bytes(d.payload)
        sent = {
            "content-type": "application/json",
            **signature_headers(list(d.secrets), d.event_id, int(time.time()), body),
        }
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout_s)
        try:
            async with self._session().post(
                d.url, data=body, headers=sent, allow_redirects=False, timeout=timeout
            ) as resp:
                excerpt = (await resp.content.read(EXCERPT)).decode(errors="replace")
                status = resp.status
                error = (
                    ""
                    if 200 <= status < 300
                    else f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
                )
                return Result(status, error, excerpt, took(), _retry_after(resp.headers.get("retry-after")))
        except egress.UnsafeUrl as e:
            return Result(error=f"refused: {e}", duration_ms=took())
        except TimeoutError:
            return Result(error=f"timed out after {self.settings.webhook_timeout_s:g} s", duration_ms=took())
        except aiohttp.ClientError as e:
            return Result(error=f"connection failed: {_describe(e)}", duration_ms=took())


def _describe(e: Exception) -> str:
    text = str(e) or type(e).__name__
    return text[:300]

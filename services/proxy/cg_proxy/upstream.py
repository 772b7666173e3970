"""The provider side: one pooled HTTP client (``cg_proxy.http_client``) for every upstream.

Each upstream's ``api`` picks its adapter (``cg_proxy.providers``), which speaks the
provider's wire format; the routes and the stream relay only ever see OpenAI's format.
Connection errors, timeouts, 429 and 5xx are retried on the same upstream, with
exponential backoff and jitter, while nothing has reached the client yet: ``open``
returns once the provider has answered 2xx (for JSON, once the whole reply is read), so
a stream that has started is never retried.

Fallback: when an upstream's retries end in such a transient failure, the same request
(the same model, or the name the next upstream's ``models`` gives it) goes to the next
upstream of its fallback chain, still before anything reached the client. The chain of
an upstream is its ``fallbacks`` in order, each followed by that fallback's own chain,
every upstream at most once; ``fallback_chains`` checks it at start-up (unknown names and
cycles are refused). Each upstream has its own retries, timeout and retry window. Any
other error (a 4xx but 429) is the client's answer at once, wherever it comes from in
the chain. A fallback whose adapter cannot express the request (e.g. ``n: 2`` for an
Anthropic upstream) is skipped. When every upstream fails, the client gets the last
one's error, ``Retry-After`` included; the caller voids the hold. A fallback is logged
(warning) and counted in ``cg_proxy_upstream_fallbacks_total{from_provider, to_provider}``.

Billing does not depend on which upstream answered: the request is reserved and settled
at the price of the model the client asked for (the route's catalog entry), with the
usage the answering upstream reports. A fallback never changes what a request costs.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter

from cg_proxy import errors
from cg_proxy.http_client import HttpClient, UpstreamError
from cg_proxy.providers import Adapter, BufferedResponse, ProviderRequest, UpstreamResponse, adapter_for
from cg_proxy.settings import Settings, Upstream
from creditgate.keys.v1 import keys_pb2

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
# Backoff before retry n (from 0): uniform in [c/2, c], c = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**n).
BACKOFF_BASE_S = 0.25
BACKOFF_MAX_S = 4.0
# A provider's Retry-After is waited out up to this; asking for longer ends the retries
# of that upstream: the next fallback is tried, or the client gets the error with the
# provider's Retry-After.
RETRY_AFTER_CAP_S = 10.0
# No retry starts later than this after an upstream's first attempt began (bounds the
# client's wait, per upstream of the fallback chain).
RETRY_WINDOW_S = 30.0

RETRIES = Counter(
    "cg_proxy_upstream_retries_total", "Upstream attempts that failed and were retried", ["provider", "reason"]
)
FALLBACKS = Counter(
    "cg_proxy_upstream_fallbacks_total",
    "Requests passed on to a fallback upstream after an upstream's retries failed",
    ["from_provider", "to_provider"],
)
# The key of ``Settings.default_upstream``'s chain in ``fallback_chains``.
DEFAULT_UPSTREAM = "default_upstream"


class _Transient(Exception):
    """A failed attempt worth retrying; ``error`` is what the client gets if it is the last."""

    def __init__(self, error: errors.APIError, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason
        self.retry_after_s = retry_after_s


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The provider's requested pause: ``retry-after-ms``, or ``Retry-After`` in seconds or as an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def backoff_s(attempt: int, retry_after: float | None) -> float | None:
    """Seconds to wait before retry ``attempt`` (from 0); None to give up now."""
    if retry_after is not None:
        if retry_after > RETRY_AFTER_CAP_S:
            return None
        return retry_after + random.uniform(0, BACKOFF_BASE_S)
    ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt)
    return random.uniform(ceiling / 2, ceiling)


def _fallback_order(upstreams: Mapping[str, Upstream], first: Upstream, name: str) -> tuple[str, ...]:
    """The names of the upstreams tried after ``first`` (called ``name``), in order."""
    order: list[str] = []

    def visit(upstream: Upstream, path: tuple[str, ...]) -> None:
        for fallback in upstream.fallbacks:
            if fallback not in upstreams:
                known = ", ".join(sorted(upstreams)) or "none"
                raise ValueError(
                    f"upstream {path[-1]!r} lists an unknown fallback {fallback!r} (configured upstreams: {known})"
                )
            if fallback in path:
                raise ValueError(f"upstream fallbacks form a cycle: {' -> '.join((*path, fallback))}")
            if fallback not in order:
                order.append(fallback)
                visit(upstreams[fallback], (*path, fallback))

    visit(first, (name,))
    return tuple(order)


def fallback_chains(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Each upstream's fallbacks in the order they are tried (``DEFAULT_UPSTREAM`` for the
    default upstream). Raises ``ValueError`` naming the upstream for an unknown fallback
    name or a cycle (``openai -> azure -> openai``, or an upstream listing itself)."""
    chains = {name: _fallback_order(settings.upstreams, up, name) for name, up in settings.upstreams.items()}
    chains[DEFAULT_UPSTREAM] = _fallback_order(settings.upstreams, settings.default_upstream, DEFAULT_UPSTREAM)
    return chains


def asked_body(upstream: Upstream, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with its model renamed as ``upstream.models`` says, if it does."""
    model = body.get("model")
    if isinstance(model, str) and model in upstream.models:
        return {**body, "model": upstream.models[model]}
    return body


class Upstreams:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.http: HttpClient | None = None
        self.fallbacks = fallback_chains(settings)  # a bad chain fails here, at start-up

    async def start(self) -> None:
        self.http = HttpClient()  # keeps no cookies: none ride along on another tenant's request

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()

    def chain(self, route: keys_pb2.ModelRoute) -> list[tuple[str, Upstream]]:
        """(name, upstream) in the order they are tried for ``route``: its provider's upstream
        (or the default one, still named after the provider), then the fallbacks."""
        upstreams = self.settings.upstreams
        if route.provider in upstreams:
            first, fallbacks = upstreams[route.provider], self.fallbacks[route.provider]
        else:
            first, fallbacks = self.settings.default_upstream, self.fallbacks[DEFAULT_UPSTREAM]
        return [(route.provider, first), *((name, upstreams[name]) for name in fallbacks)]

    async def open(
        self, path: str, route: keys_pb2.ModelRoute, body: dict[str, Any], *, stream: bool
    ) -> UpstreamResponse:
        """Sends the request and returns the open response (2xx only), in OpenAI's format:
        an SSE stream when ``stream`` (the routes decided it), else the whole JSON reply,
        read. A provider error becomes an OpenAI-shaped ``APIError`` (after the retries and
        the fallbacks: the last upstream's error)."""
        assert self.http is not None
        failed: tuple[str, _Transient] | None = None  # the upstream that failed last, and how
        for name, upstream in self.chain(route):
            adapter = adapter_for(upstream.api)
            try:
                request = adapter.request(upstream, path, route, asked_body(upstream, body))
            except errors.APIError:
                if failed is None:  # the first upstream: the client's request is the problem
                    raise
                log.warning(
                    "fallback upstream cannot take this request, skipped",
                    extra={"provider": route.provider, "fallback": name},
                )
                continue
            if failed is not None:
                FALLBACKS.labels(failed[0], name).inc()
                log.warning(
                    "upstream failed, falling back",
                    extra={
                        "provider": route.provider,
                        "from": failed[0],
                        "to": name,
                        "reason": failed[1].reason,
                        "status": failed[1].error.status,
                    },
                )
            try:
                return await self._retrying(name, upstream, adapter, request, stream)
            except _Transient as transient:
                failed = (name, transient)
        assert failed is not None
        raise failed[1].error from None

    async def _retrying(
        self, name: str, upstream: Upstream, adapter: Adapter, request: ProviderRequest, stream: bool
    ) -> UpstreamResponse:
        """One upstream with its retries; raises the last ``_Transient`` when they are over.

        Not ``cglib.retry.retrying``: that waits out a dependency until it is back, while
        this is one request's retry policy: a count (``max_retries``), the provider's own
        ``Retry-After`` honoured up to a cap, a window after which no retry starts, and the
        retries of each upstream counted by reason."""
        read_s = upstream.timeout_s or self.settings.upstream_timeout_s
        first_try = time.monotonic()
        attempt = 0
        while True:
            try:
                return await self._attempt(adapter, request, read_s, stream)
            except _Transient as failed:
                delay = backoff_s(attempt, failed.retry_after_s) if attempt < upstream.max_retries else None
                if delay is None or time.monotonic() + delay - first_try > RETRY_WINDOW_S:
                    raise
                RETRIES.labels(name, failed.reason).inc()
                log.warning(
                    "upstream attempt failed, retrying",
                    extra={"provider": name, "reason": failed.reason, "retry": attempt + 1, "delay_s": round(delay, 3)},
                )
                attempt += 1
                await asyncio.sleep(delay)

    async def _attempt(
        self, adapter: Adapter, request: ProviderRequest, read_s: float, stream: bool
    ) -> UpstreamResponse:
        assert self.http is not None
        try:
            resp = await self.http.post(
                request.url, request.body, request.headers, connect_s=CONNECT_TIMEOUT_S, read_s=read_s
            )
        except TimeoutError:
            raise _Transient(
                errors.APIError(
                    504, "The upstream provider did not answer in time.", type="server_error", code="upstream_timeout"
                ),
                "timeout",
            ) from None
        except UpstreamError as e:
            raise _Transient(
                errors.APIError(
                    502,
                    f"The upstream provider could not be reached ({type(e).__name__}).",
                    type="server_error",
                    code="upstream_unreachable",
                ),
                "connect",
            ) from None
        if resp.status >= 300:
            try:
                raw = await resp.read()
            except (UpstreamError, TimeoutError):
                raw = b""
            finally:
                resp.release()
            error = adapter.error(resp.status, raw, resp.headers)
            if resp.status == 429 or resp.status >= 500:
                raise _Transient(error, str(resp.status), retry_after_s(resp.headers))
            raise error
        if stream:
            return adapter.stream(resp)
        try:
            raw = await resp.read()
        except (UpstreamError, TimeoutError):
            raise _Transient(
                errors.APIError(
                    502, "The upstream provider's reply was cut off.", type="server_error", code="upstream_error"
                ),
                "cut_off",
            ) from None
        finally:
            resp.release()
        return BufferedResponse(adapter.reply(raw))

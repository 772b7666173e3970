"""The provider side: one pooled aiohttp session for every upstream.

Each upstream's ``api`` picks its adapter (``cg_proxy.providers``), which speaks the
provider's wire format; the routes and the stream relay only ever see OpenAI's format.
Connection errors, timeouts, 429 and 5xx are retried on the same upstream, with
exponential backoff and jitter, while nothing has reached the client yet: ``open``
returns once the provider has answered 2xx (for JSON, once the whole reply is read), so
a stream that has started is never retried.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from typing import Any, Mapping

import aiohttp
from prometheus_client import Counter

from cg_proxy import errors
from cg_proxy.providers import Adapter, BufferedResponse, ProviderRequest, UpstreamResponse, adapter_for
from cg_proxy.settings import Settings, Upstream
from creditgate.keys.v1 import keys_pb2

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
# Backoff before retry n (from 0): uniform in [c/2, c], c = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**n).
BACKOFF_BASE_S = 0.25
BACKOFF_MAX_S = 4.0
# A provider's Retry-After is waited out up to this; asking for longer ends the retries
# and the client gets the error with the provider's Retry-After.
RETRY_AFTER_CAP_S = 10.0
# No retry starts later than this after the first attempt began (bounds the client's wait).
RETRY_WINDOW_S = 30.0

RETRIES = Counter("cg_proxy_upstream_retries_total", "Upstream attempts that failed and were retried",
                  ["provider", "reason"])


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


class Upstreams:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S,
                                          sock_read=self.settings.upstream_timeout_s),
            auto_decompress=True,
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def _upstream(self, route: keys_pb2.ModelRoute) -> Upstream:
        return self.settings.upstreams.get(route.provider, self.settings.default_upstream)

    async def open(self, path: str, route: keys_pb2.ModelRoute, body: dict[str, Any]) -> UpstreamResponse:
        """Sends the request and returns the open response (2xx only), in OpenAI's format.
        A provider error becomes an OpenAI-shaped ``APIError`` (after the retries)."""
        assert self.session is not None
        upstream = self._upstream(route)
        adapter = adapter_for(upstream.api)
        request = adapter.request(upstream, path, route, body)
        stream = body.get("stream") is True
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S,
                                        sock_read=upstream.timeout_s or self.settings.upstream_timeout_s)
        first_try = time.monotonic()
        attempt = 0
        while True:
            try:
                return await self._attempt(adapter, request, timeout, stream)
            except _Transient as failed:
                delay = backoff_s(attempt, failed.retry_after_s) if attempt < upstream.max_retries else None
                if delay is None or time.monotonic() + delay - first_try > RETRY_WINDOW_S:
                    raise failed.error from None
                RETRIES.labels(route.provider, failed.reason).inc()
                log.warning("upstream attempt failed, retrying", extra={
                    "provider": route.provider, "reason": failed.reason, "retry": attempt + 1, "delay_s": round(delay, 3)})
                attempt += 1
                await asyncio.sleep(delay)

    async def _attempt(self, adapter: Adapter, request: ProviderRequest, timeout: aiohttp.ClientTimeout,
                       stream: bool) -> UpstreamResponse:
        assert self.session is not None
        try:
            resp = await self.session.post(request.url, data=request.body, headers=request.headers, timeout=timeout)
        except TimeoutError:
            raise _Transient(errors.APIError(504, "The upstream provider did not answer in time.", type="server_error",
                                             code="upstream_timeout"), "timeout") from None
        except aiohttp.ClientError as e:
            raise _Transient(errors.APIError(
                502, f"The upstream provider could not be reached ({type(e).__name__}).", type="server_error",
                code="upstream_unreachable"), "connect") from None
        if resp.status >= 300:
            try:
                raw = await resp.read()
            except (aiohttp.ClientError, TimeoutError):
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
        except (aiohttp.ClientError, TimeoutError):
            raise _Transient(errors.APIError(502, "The upstream provider's reply was cut off.", type="server_error",
                                             code="upstream_error"), "cut_off") from None
        finally:
            resp.release()
        return BufferedResponse(adapter.reply(raw))

"""The provider side: one pooled aiohttp session, OpenAI-compatible upstreams."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from cg_proxy import errors
from cg_proxy.settings import Settings, Upstream
from creditgate.keys.v1 import keys_pb2


class Upstreams:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.settings.upstream_timeout_s),
            auto_decompress=True,
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def _upstream(self, route: keys_pb2.ModelRoute) -> Upstream:
        return self.settings.upstreams.get(route.provider, self.settings.default_upstream)

    async def open(self, path: str, route: keys_pb2.ModelRoute, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """Sends the request and returns the open response (2xx only). A provider error
        becomes an OpenAI-shaped ``APIError``; the response is released in that case."""
        assert self.session is not None
        upstream = self._upstream(route)
        headers = {"Content-Type": "application/json"}
        if upstream.api_key:
            headers["Authorization"] = f"Bearer {upstream.api_key}"
        try:
            resp = await self.session.post(upstream.base_url.rstrip("/") + path, data=json.dumps(body), headers=headers)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise errors.APIError(
                502, f"The upstream provider could not be reached ({type(e).__name__}).", type="server_error",
                code="upstream_unreachable",
            ) from None
        if resp.status < 300:
            return resp
        try:
            payload = await resp.json(content_type=None)
            message = payload["error"]["message"]
        except Exception:
            message = f"The upstream provider answered HTTP {resp.status}."
        finally:
            resp.release()
        retry_after = resp.headers.get("Retry-After")
        headers_out = {"Retry-After": retry_after} if retry_after else None
        if resp.status == 429:
            raise errors.APIError(429, message, type="rate_limit_error", code="upstream_rate_limited", headers=headers_out)
        if 400 <= resp.status < 500:
            raise errors.APIError(resp.status, message, code="upstream_rejected")
        raise errors.APIError(502, message, type="server_error", code="upstream_error", headers=headers_out)

"""OpenAI-compatible upstreams: OpenAI, Azure OpenAI, Groq, Together, Mistral, DeepSeek,
vLLM, Ollama, and Google Gemini through its OpenAI-compatible endpoint. The request and
the replies pass through unchanged (the body serialized with orjson: on the hot path,
~5× faster than ``json``); only the key's header differs (``api_key_header``:
``Authorization: Bearer <key>`` by default, Azure's ``api-key: <key>``)."""

from __future__ import annotations

from typing import Any

import orjson

from cg_proxy.http_client import Response
from cg_proxy.providers.base import Adapter, ProviderRequest, UpstreamResponse, join_url
from cg_proxy.settings import Upstream
from creditgate.keys.v1 import keys_pb2


class OpenAICompatible(Adapter):
    def request(
        self, upstream: Upstream, path: str, route: keys_pb2.ModelRoute, body: dict[str, Any]
    ) -> ProviderRequest:
        headers = {"Content-Type": "application/json"}
        key = upstream.api_key.get_secret_value()
        if key:
            if upstream.api_key_header.lower() == "authorization":
                headers["Authorization"] = f"Bearer {key}"
            else:
                headers[upstream.api_key_header] = key
        return ProviderRequest(join_url(upstream.base_url, path), headers, orjson.dumps(body))

    def reply(self, raw: bytes) -> bytes:
        return raw

    def stream(self, resp: Response) -> UpstreamResponse:
        return resp  # already OpenAI SSE

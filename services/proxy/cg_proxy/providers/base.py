"""What a provider adapter provides.

The routes speak OpenAI's chat-completions format in both directions. An adapter turns
that request into the provider's HTTP request (``request``), the provider's 2xx JSON
reply into a ``chat.completion`` (``reply``), its open 2xx stream into a response whose
``content.iter_any()`` yields OpenAI SSE bytes (``stream``), and its error replies into
an OpenAI-shaped ``APIError`` (``error``). What the routes and the relay use of a
response is ``UpstreamResponse``: ``status``, ``read()``, ``release()``, ``content.iter_any()``.
"""

from __future__ import annotations

import abc
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cg_proxy import errors
from cg_proxy.http_client import Response
from cg_proxy.settings import Upstream
from creditgate.keys.v1 import keys_pb2

# A provider's own error text is passed on, but never more than this.
MAX_MESSAGE_CHARS = 1000


class Content(Protocol):
    def iter_any(self) -> AsyncIterator[bytes]: ...


class UpstreamResponse(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def content(self) -> Content: ...

    async def read(self) -> bytes: ...

    def release(self) -> None: ...


class StreamTranslator(Protocol):
    """Provider stream bytes in (any split), OpenAI SSE bytes out."""

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


@dataclass(frozen=True)
class ProviderRequest:
    url: str
    headers: dict[str, str] = field(repr=False)  # holds the provider key
    body: bytes = field(repr=False)


class Adapter(abc.ABC):
    @abc.abstractmethod
    def request(
        self, upstream: Upstream, path: str, route: keys_pb2.ModelRoute, body: dict[str, Any]
    ) -> ProviderRequest:
        """The provider request for an OpenAI-format ``body`` (its ``model`` already the
        upstream model). Raises a 400 ``APIError`` for what the provider cannot express."""

    @abc.abstractmethod
    def reply(self, raw: bytes) -> bytes:
        """A complete 2xx JSON reply, as OpenAI ``chat.completion`` JSON bytes."""

    @abc.abstractmethod
    def stream(self, resp: Response) -> UpstreamResponse:
        """An open 2xx streaming reply, as a response yielding OpenAI SSE bytes."""

    def error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> errors.APIError:
        return provider_error(status, raw, headers)


class BufferedResponse:
    """A reply already read in full (so a cut-off body could still be retried)."""

    def __init__(self, data: bytes, status: int = 200) -> None:
        self.status = status
        self.data = data
        self.content = self

    async def read(self) -> bytes:
        return self.data

    async def iter_any(self) -> AsyncIterator[bytes]:
        yield self.data

    def release(self) -> None:
        pass


class TranslatedStream:
    """An open provider stream seen through a ``StreamTranslator``. Errors of the
    underlying connection propagate unchanged (the relay handles them)."""

    def __init__(self, resp: Response, translator: StreamTranslator) -> None:
        self.resp = resp
        self.status = resp.status
        self.translator = translator
        self.content = self

    async def iter_any(self) -> AsyncIterator[bytes]:
        async for piece in self.resp.content.iter_any():
            out = self.translator.feed(piece)
            if out:
                yield out
        tail = self.translator.finish()
        if tail:
            yield tail

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.iter_any()])

    def release(self) -> None:
        self.resp.release()


def join_url(base_url: str, path: str) -> str:
    """``base_url`` + ``path``, keeping a query string of the base after the path."""
    base, sep, query = base_url.partition("?")
    return base.rstrip("/") + path + (sep + query if sep else "")


def _error_fields(raw: bytes) -> tuple[str, str, str | None]:
    """(type, message, param) from an OpenAI or Anthropic error body; both nest an
    ``error`` object with ``type`` and ``message``."""
    try:
        err = json.loads(raw)["error"]
        etype, message, param = err.get("type"), err.get("message"), err.get("param")
    except Exception:
        return "", "", None
    return (
        etype if isinstance(etype, str) else "",
        message[:MAX_MESSAGE_CHARS] if isinstance(message, str) else "",
        param if isinstance(param, str) else None,
    )


def provider_error(status: int, raw: bytes, headers: Mapping[str, str]) -> errors.APIError:
    """A provider's error reply as the client sees it.

    429 stays 429 (``rate_limit_error``, ``Retry-After`` passed on). 401/402/403/404 mean
    the gateway's key, account or model mapping is wrong, not the client's request: 502,
    and the provider's text (which may quote the key) is not shown. Other 4xx keep their
    status and message. 503 and 529 (overloaded) become 503, any other 5xx 502.
    """
    etype, message, param = _error_fields(raw)
    retry_after = headers.get("Retry-After")
    passed = {"Retry-After": retry_after} if retry_after else None
    if status == 429:
        return errors.APIError(
            429,
            message or "The upstream provider is rate limiting requests. Please retry shortly.",
            type="rate_limit_error",
            code="upstream_rate_limited",
            headers=passed,
        )
    if status in (401, 402, 403):
        return errors.APIError(
            502,
            "The gateway's credentials for the upstream provider were refused. "
            "This is a problem on our side, not with your request.",
            type="server_error",
            code="upstream_auth_failed",
        )
    if status == 404:
        return errors.APIError(
            502,
            "The upstream provider does not know this model or endpoint. "
            "This is a problem on our side, not with your request.",
            type="server_error",
            code="upstream_not_found",
        )
    if 400 <= status < 500:
        return errors.APIError(
            status,
            message or f"The upstream provider rejected the request (HTTP {status}).",
            code="upstream_rejected",
            param=param,
        )
    if status in (503, 529) or etype == "overloaded_error":
        return errors.APIError(
            503,
            message or "The upstream provider is overloaded. Please retry shortly.",
            type="server_error",
            code="upstream_overloaded",
            headers=passed or {"Retry-After": "1"},
        )
    return errors.APIError(
        502,
        message or f"The upstream provider answered HTTP {status}.",
        type="server_error",
        code="upstream_error",
        headers=passed,
    )

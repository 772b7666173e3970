"""What the proxy's routes work with, as interfaces: ``create_app`` builds the real ones
from the settings (``app``), a test hands it fakes (``tests/unit/proxy``).

==================  ========================================  =============================
interface           what it does                              the real one
==================  ========================================  =============================
``Authenticator``   a request's key, its models and billing,  ``auth.KeyAuthenticator``
                    or the refusal (401, 403, 503)            (keys over gRPC, cached)
``Ledger``          reserve before forwarding; settle or      ``ledger_client.LedgerClient``
                    void after                                (ledger over gRPC)
``UpstreamPool``    the provider's reply, in OpenAI's format  ``upstream.Upstreams``
                    (retries and fallbacks inside)            (http_client)
``Recorder``        settle (or void) and publish the usage    ``usage_recorder.UsageRecorder``
                    event, off the request path
``EventBus``        NATS: usage events out, key changes in    ``bus.Bus``
==================  ========================================  =============================

A ``Probe`` reports one dependency's readiness for ``/readyz`` ("serving" when ready).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cg_proxy.auth import AuthedKey
from cg_proxy.providers.base import UpstreamResponse
from cg_proxy.token_usage import Usage
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2
from creditgate.ledger.v1 import ledger_pb2

# A message's payload, for a subscriber of the bus.
Handler = Callable[[bytes], Awaitable[None]]
Probe = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class Finished:
    """A metered request the client has its answer to: what the recorder settles and reports."""

    request_id: str
    key: keys_pb2.Key
    customer_id: str  # the customer billed ("" for none)
    model: str
    usage: Usage
    outcome: events_pb2.UsageOutcome.ValueType
    started: float  # time.perf_counter() when the request came in
    stream: bool
    # When it was answered: how long it took, and the wall-clock time (set by the recorder,
    # journaled with the rest, so an event replayed after a restart says the same).
    latency_ms: int | None = None
    time_unix_ms: int | None = None
    # The lease its bound came from (``Ledger.lease_of``), journaled so that a restart
    # settles it from that lease; None for a request reserved on its own.
    lease: tuple[str, str, str, str, str] | None = None


class Authenticator(Protocol):
    async def authenticate(self, headers: Mapping[str, str]) -> AuthedKey:
        """The request's key if it may be used, else the ``APIError`` to answer."""
        ...

    async def on_key_changed(self, payload: bytes) -> None:
        """A ``KeyChanged`` event: forget what is cached of that key."""
        ...

    def forget_all(self) -> None:
        """Key changes may have been missed (the bus was disconnected): forget every key."""
        ...


class Ledger(Protocol):
    async def reserve(
        self,
        request_id: str,
        billing: keys_pb2.LedgerBilling,
        route: keys_pb2.ModelRoute,
        max_input: int,
        max_output: int,
        rate_limit: ledger_pb2.RateLimit | None = None,
    ) -> ledger_pb2.ReserveResponse:
        """The hold; a refusal is raised as the ``APIError`` the client gets."""
        ...

    async def settle(
        self,
        request_id: str,
        usage: Usage,
        lease: tuple[str, str, str, str, str] | None = None,
        requested_at_ms: int = 0,
    ) -> ledger_pb2.SettleResponse:
        """Posts the usage: from the request's lease when it took its bound from one
        (``lease``: what the journal kept of it, after a restart; ``requested_at_ms``: when
        the request came in, by the journal, 0 if unknown), else its reservation."""
        ...

    async def void(self, request_id: str, reason: str) -> ledger_pb2.VoidResponse: ...

    async def release_lease(self, lease_id: str) -> None:
        """Releases a lease no live worker holds (an earlier run's, named in its journal)."""
        ...

    def lease_of(self, request_id: str) -> tuple[str, str, str, str, str] | None:
        """What the journal keeps of a request that took its bound from a lease (None: reserved)."""
        ...


class UpstreamPool(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def open(
        self, path: str, route: keys_pb2.ModelRoute, body: dict[str, Any], *, stream: bool
    ) -> UpstreamResponse:
        """The provider's 2xx reply (a stream when ``stream``), or its error as an ``APIError``."""
        ...


class Recorder(Protocol):
    def start(self) -> None: ...

    def record(self, finished: Finished) -> None:
        """Settles the usage and publishes the usage event, in the background."""
        ...

    def void(self, request_id: str, reason: str) -> None:
        """Releases the hold, in the background."""
        ...

    def track(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs ``work`` (a stream's reader) in the background, awaited on shutdown."""
        ...

    async def drain(self, timeout_s: float) -> None:
        """On shutdown: waits (bounded) for the background work, and keeps what is not sent."""
        ...


class EventBus(Protocol):
    @property
    def connected(self) -> bool: ...

    def on(self, subject: str, handler: Handler) -> None:
        """Subscribes ``handler`` to ``subject`` once connected (call before ``start``)."""
        ...

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Calls ``callback`` after each reconnection (call before ``start``)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(
        self, subject: str, payload: bytes, msg_id: str, timeout_s: float, headers: Mapping[str, str] | None = None
    ) -> None:
        """Publishes to JetStream (with ``headers`` besides its own), deduplicated by
        ``msg_id``; raises if not connected."""
        ...

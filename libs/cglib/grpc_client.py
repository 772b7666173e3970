"""gRPC client defaults: every call has a deadline, and a channel to a restarted
server reconnects within about a second instead of backing off for minutes."""

from __future__ import annotations

import grpc

from cglib.tls import Tls

DEFAULT_TIMEOUT_S = 2.0

# The failures after which the same call (with the same idempotency id) is worth making
# again: the callee was unreachable, too slow, overloaded, or the call was cut off. Every
# other code is an answer (the callee decided) and retrying it changes nothing.
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.enable_retries", 0),
]


def insecure_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


def channel(target: str, tls: Tls | None) -> grpc.aio.Channel:
    """The channel every service opens to another: plaintext without ``tls``; with it,
    mutual TLS (this process's certificate shown, the server's checked against the CA and
    the target's host name, so ``ledger:50052`` needs ``ledger`` among its names)."""
    if tls is None:
        return insecure_channel(target)
    return grpc.aio.secure_channel(target, tls.channel_credentials(), options=CHANNEL_OPTIONS)

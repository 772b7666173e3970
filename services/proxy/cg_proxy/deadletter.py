"""Which publish failures are for good: the outbox moves such an entry to its dead-letter
table (``Outbox.dead_letter``) instead of retrying it ahead of every entry behind it.

Permanent, at once:
- ``MaxPayloadError``: the event is larger than the server's ``max_payload``; it will
  never fit.
- a JetStream API error answered with 400 (bad request: a message over the stream's
  ``max_msg_size``, an expected-stream mismatch) or 404.

Permanent after ``NO_STREAM_ATTEMPTS`` attempts:
- ``NoStreamResponseError``: no stream takes the subject. A stream being created or a
  clustered stream electing a leader answers so for a moment too, so the entry gets a
  few tries (with the relay's backoff, tens of seconds) before it is set aside.

Anything else (timeouts, 503, a lost connection) is transient: retried, in order.
"""

from __future__ import annotations

import nats.errors
import nats.js.errors

NO_STREAM_ATTEMPTS = 8
_PERMANENT_API_CODES = frozenset({400, 404, 413})


def permanent(error: BaseException, attempts: int, no_stream_attempts: int = NO_STREAM_ATTEMPTS) -> bool:
    """Whether a publish that failed with ``error``, on its ``attempts``-th attempt
    (counting this one), will never succeed."""
    if isinstance(error, nats.errors.MaxPayloadError):
        return True
    if isinstance(error, nats.js.errors.NoStreamResponseError):
        return attempts >= no_stream_attempts
    if isinstance(error, nats.js.errors.ServiceUnavailableError):
        return False
    if isinstance(error, nats.js.errors.APIError):
        return error.code in _PERMANENT_API_CODES
    return False


def describe(error: BaseException) -> str:
    """A short reason kept with the dead letter."""
    if isinstance(error, nats.js.errors.APIError) and error.description:
        return f"{type(error).__name__}: {error.code} {error.description}"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__

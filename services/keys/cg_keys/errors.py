"""The keys service's errors, each mapped to one gRPC status by ``servicer``.

- ``InvalidArgument(field, message)``: bad input, naming the field; nothing written.
- ``NotFound``: no such thing, or not the actor's (we do not reveal which).
- ``PermissionDenied``: the actor's role may not make this call.
- ``FailedPrecondition``: the state forbids it (self-service off, not enough credits, revoked).
- ``Unavailable``: the ledger could not be reached; retry with the same idempotency key.
"""

from __future__ import annotations


class KeysError(Exception):
    pass


class InvalidArgument(KeysError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(KeysError):
    pass


class PermissionDenied(KeysError):
    pass


class FailedPrecondition(KeysError):
    pass


class Unavailable(KeysError):
    pass

"""Identity: users, passwords, browser sessions, CSRF, management API tokens, invites and
sign-in throttling. ``SessionAuth`` is the BFF's ``Authenticator`` (``cg_bff.principal``)
and the entry to the identity operations; the modules behind it:

- ``credentials``: the secrets (session ids, CSRF tokens, invite and API tokens) and how
  each is kept (SHA-256, or not at all);
- ``passwords``: the password policy, argon2id off the event loop;
- ``sessions``: server-side sessions and their cookie;
- ``throttle``: failed sign-ins per account and per address, in the database;
- ``accounts``: users, the bootstrap admin, a partner's team and its rules;
- ``invites``: single-use, expiring invites; ``apitokens``: management API tokens.
"""

from __future__ import annotations

from fastapi import Request

from cg_bff.auth.authenticator import SessionAuth, client_address, principal_of
from cg_bff.state import BffState
from creditgate.keys.v1 import keys_pb2_grpc

__all__ = ["ID_PATTERN", "SessionAuth", "client_address", "identity", "keys_call", "principal_of"]

# What an id or a token in a path may hold (ours are base62 with a prefix, or url-safe base64).
ID_PATTERN = r"^[A-Za-z0-9_-]+$"


def identity(request: Request) -> SessionAuth:
    """The app's ``SessionAuth`` (the routes of identity need more than ``authenticate``)."""
    auth = request.app.state.bff.auth
    if not isinstance(auth, SessionAuth):
        raise RuntimeError("the BFF's authenticator is not cg_bff.auth.SessionAuth")
    return auth


def keys_call(request: Request) -> tuple[BffState, keys_pb2_grpc.KeysServiceAsyncStub]:
    """The app's state and its keys stub."""
    state: BffState = request.app.state.bff
    return state, state.backends.keys

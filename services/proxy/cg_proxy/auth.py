"""Virtual key authentication: a short-lived in-process cache in front of the keys
service. Only the SHA-256 of the presented secret leaves this module."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from cg_proxy import errors
from cg_proxy.policy import check_domain
from cglib.grpc_client import TRANSIENT
from cglib.keysecret import hash_secret, looks_like_key
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2, keys_pb2_grpc

log = logging.getLogger(__name__)

_STATUS_NAMES = {
    keys_pb2.KEY_STATUS_SUSPENDED: "suspended",
    keys_pb2.KEY_STATUS_EXHAUSTED: "exhausted",
    keys_pb2.KEY_STATUS_EXPIRED: "expired",
    keys_pb2.KEY_STATUS_REVOKED: "revoked",
}
_CUSTOMER_ACCOUNT = "customer:"


@dataclass(frozen=True)
class AuthedKey:
    key: keys_pb2.Key
    models: dict[str, keys_pb2.ModelRoute]
    billing: keys_pb2.LedgerBilling
    # The platform suspended the key's partner: every key of it is refused until resumed.
    partner_suspended: bool = False

    @property
    def customer_id(self) -> str:
        """The customer whose AI credits the key's requests are billed to ("" for none)."""
        if self.billing.customer_account:
            return self.billing.customer_account.removeprefix(_CUSTOMER_ACCOUNT)
        return self.key.billing.customer_id


def expired(key: keys_pb2.Key, now_unix: float) -> bool:
    """Expiry is decided here, against the wall clock, on every request: the cached
    status was right when it was read, but a key may expire while it sits in the cache
    (for up to its TTL), and no event announces that. So the key stops at its expiry
    instant on every replica, as the keys service's reads say (expiry <= now)."""
    return 0 < key.expires_at_unix <= now_unix


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise errors.missing_key()
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise errors.missing_key()
    return token


class KeyAuthenticator:
    def __init__(self, stub: keys_pb2_grpc.KeysServiceAsyncStub, ttl_s: float, timeout_s: float) -> None:
        self.stub = stub
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._cache: dict[str, tuple[float, AuthedKey]] = {}
        self._hashes_by_key: dict[str, set[str]] = {}
        # Key changes are numbered; a lookup that a change of its key crossed read the key
        # before the change (whose event has come and gone): its answer is not cached.
        self._changes = 0
        self._last_change_of: dict[str, int] = {}
        self._forgotten_up_to = 0  # changes older than this are no longer told apart
        # One lookup per key hash at a time: requests that miss the cache while it is in
        # flight (all of a busy key's, each time its entry expires) wait for its answer
        # instead of each asking the keys service. Joined only while no key change has come
        # since it started, so nobody is given an answer older than a change it followed.
        self._lookups: dict[str, tuple[asyncio.Future[AuthedKey], int]] = {}

    def invalidate_key(self, key_id: str, stale_hashes: Iterable[str] = ()) -> None:
        """Drops every cached entry of a key (after any lifecycle change)."""
        for key_hash in {*self._hashes_by_key.pop(key_id, ()), *stale_hashes}:
            self._cache.pop(key_hash, None)
        self._changes += 1
        if len(self._last_change_of) > 100_000:
            self._last_change_of.clear()
            self._forgotten_up_to = self._changes
        self._last_change_of[key_id] = self._changes

    def forget_all(self) -> None:
        """Every cached key dropped, and no lookup in flight cached: the bus was down, so a
        key's change (a revoke) may have come and gone unseen. Without this a revoked key
        would be served until its entry's TTL ran out."""
        self._cache.clear()
        self._hashes_by_key.clear()
        self._last_change_of.clear()
        self._changes += 1
        self._forgotten_up_to = self._changes

    def _changed_since(self, key_id: str, change_no: int) -> bool:
        return self._last_change_of.get(key_id, 0) > change_no or self._forgotten_up_to > change_no

    async def on_key_changed(self, payload: bytes) -> None:
        """A ``KeyChanged`` event from the bus: the key's cached entries go."""
        try:
            event = events_pb2.KeyChanged.FromString(payload)
        except DecodeError:
            log.warning("unreadable key change event ignored")
            return
        self.invalidate_key(event.key_id, event.stale_key_hashes)

    async def authenticate(self, headers: Mapping[str, str]) -> AuthedKey:
        """The one choke point of every route: the key, its status and its policy."""
        secret = bearer_token(headers.get("authorization"))
        if not looks_like_key(secret):
            raise errors.invalid_key(secret)
        key_hash = hash_secret(secret)
        now = time.monotonic()
        hit = self._cache.get(key_hash)
        if hit is not None and hit[0] > now:
            authed = hit[1]
        else:
            authed = await self._shared_lookup(key_hash, secret, now)
        status = authed.key.status
        if status == keys_pb2.KEY_STATUS_ACTIVE and expired(authed.key, time.time()):
            status = keys_pb2.KEY_STATUS_EXPIRED
        if status == keys_pb2.KEY_STATUS_REVOKED:
            raise errors.invalid_key(secret)
        if authed.partner_suspended:
            raise errors.partner_suspended()
        if status != keys_pb2.KEY_STATUS_ACTIVE:
            raise errors.key_not_usable(_STATUS_NAMES.get(status, "inactive"))
        check_domain(list(authed.key.allowed_domains), headers)
        return authed

    async def _shared_lookup(self, key_hash: str, secret: str, now: float) -> AuthedKey:
        """The key's lookup: the one in flight if no key change came since it started, else
        a new one. A caller that goes away (its client disconnected) cancels it for nobody."""
        flight = self._lookups.get(key_hash)
        if flight is None or flight[1] != self._changes:
            lookup = asyncio.ensure_future(self._lookup_and_cache(key_hash, secret, now, self._changes))
            lookup.add_done_callback(_retrieved)
            flight = self._lookups[key_hash] = (lookup, self._changes)
        return await asyncio.shield(flight[0])

    async def _lookup_and_cache(self, key_hash: str, secret: str, now: float, looked_up_at: int) -> AuthedKey:
        try:
            authed = await self._lookup(key_hash, secret)
        finally:
            if self._lookups.get(key_hash, (None, -1))[1] == looked_up_at:
                del self._lookups[key_hash]
        if not self._changed_since(authed.key.id, looked_up_at):  # else used once, read again next time
            if len(self._cache) > 100_000:
                self._cache.clear()
                self._hashes_by_key.clear()
            self._cache[key_hash] = (now + self.ttl_s, authed)
            self._hashes_by_key.setdefault(authed.key.id, set()).add(key_hash)
        return authed

    async def _lookup(self, key_hash: str, secret: str) -> AuthedKey:
        try:
            resp = await self.stub.AuthenticateKey(
                keys_pb2.AuthenticateKeyRequest(key_hash=key_hash), timeout=self.timeout_s
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise errors.invalid_key(secret) from None
            if e.code() in TRANSIENT:
                raise errors.service_unavailable("keys") from None
            raise
        return AuthedKey(
            key=resp.key,
            models={m.id: m for m in resp.models},
            billing=resp.billing,
            partner_suspended=resp.partner_state == keys_pb2.PARTNER_STATUS_SUSPENDED,
        )


def _retrieved(lookup: asyncio.Future[AuthedKey]) -> None:
    """Marks a shared lookup's failure as seen: its callers may all have gone."""
    if not lookup.cancelled():
        lookup.exception()

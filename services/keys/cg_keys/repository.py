"""The keys database's queries, and the one way a key's row is changed.

``KeyRepository.locked(key_id)`` is "lock the row, change it, commit": it reads the key
under its row lock (PostgreSQL: ``SELECT ... FOR UPDATE``; SQLite: every transaction of
ours holds the write lock, ``cglib.db``), hands the row to the block, and commits what
the block changed when it ends (an exception rolls everything back). Every decision about
a key's state is taken inside such a block, on the key as it is then: a check made before,
on a read, could be stale.

Reads open a session of their own (``session()``) and use the queries below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_keys import access
from cg_keys.errors import NotFound
from cg_keys.models import KeyFunding, Partner, VirtualKey
from creditgate.keys.v1 import keys_pb2

# Rows that are not keys yet (or never will be): no read, list or login sees them.
UNBORN = ("provisioning", "failed")


class KeyRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    def session(self) -> AsyncSession:
        return self.sessions()

    @asynccontextmanager
    async def locked(self, key_id: str) -> AsyncIterator[tuple[AsyncSession, VirtualKey]]:
        """``async with repo.locked(key_id) as (session, key):`` change ``key`` (and add
        rows to ``session``); committed when the block ends."""
        async with self.sessions() as session:
            key = await access.lookup(session, VirtualKey, key_id, lock=True)
            if key is None:
                raise NotFound("key not found")
            yield session, key
            session.add(key)
            await session.commit()

    async def changeable(self, actor: keys_pb2.Actor, key_id: str, partner_only: bool = False) -> access.ActingOn:
        """The acting tenant and a key it may change (``access``), read without a lock."""
        async with self.sessions() as session:
            acting = await access.resolve(session, actor)
            if partner_only:
                access.require_partner(acting)
            return acting, access.changeable_key(acting, await access.lookup(session, VirtualKey, key_id))

    # -- creating a key row ------------------------------------------------------------

    @staticmethod
    async def by_idempotency(session: AsyncSession, partner_id: str, idem: str) -> VirtualKey | None:
        """Stored scoped by owner: ``p:<key>`` for the partner's creates, ``c:<customer>:<key>``
        for each customer's."""
        q = select(VirtualKey).where(VirtualKey.partner_id == partner_id, VirtualKey.idempotency_key == idem)
        return (await session.exec(q)).first()

    async def insert(self, session: AsyncSession, key: VirtualKey) -> VirtualKey:
        """Writes a new key row; the row already made under the same idempotency key if a
        concurrent call won."""
        session.add(key)
        try:
            await session.commit()
            return key
        except IntegrityError:
            await session.rollback()
            existing = await self.by_idempotency(session, key.partner_id, key.idempotency_key or "")
            if existing is None:
                raise
            return existing

    # -- fundings --------------------------------------------------------------------

    @staticmethod
    async def record_funding(session: AsyncSession, key: VirtualKey, funding_id: str, amount: int, fee: int) -> bool:
        """Adds a ledger funding to the key's ``funded_ucr`` once (keyed by the ledger's
        idempotency id); says whether this call recorded it. Inside ``locked``."""
        if await session.get(KeyFunding, funding_id) is not None:
            return False
        session.add(KeyFunding(idempotency_id=funding_id, key_id=key.id, amount_ucr=amount, fee_ucr=fee))
        key.funded_ucr += amount
        return True

    async def funding_recorded(self, funding_id: str) -> bool:
        async with self.sessions() as session:
            return await session.get(KeyFunding, funding_id) is not None

    async def fundings_since(self, key_id: str, id_prefix: str, since_unix: int) -> int:
        """How many of the key's fundings whose id starts with ``id_prefix`` were recorded
        since ``since_unix``."""
        q = (
            select(func.count())
            .select_from(KeyFunding)
            .where(
                KeyFunding.key_id == key_id,
                KeyFunding.created_at >= since_unix,
                col(KeyFunding.idempotency_id).startswith(id_prefix),
            )
        )
        async with self.sessions() as session:
            return (await session.exec(q)).one()

    # -- reads -----------------------------------------------------------------------

    async def by_hash(self, key_hash: str) -> tuple[VirtualKey, Partner] | None:
        async with self.sessions() as session:
            key = (await session.exec(select(VirtualKey).where(VirtualKey.key_hash == key_hash))).first()
            if key is None or key.status in UNBORN:
                return None
            partner = await session.get(Partner, key.partner_id)
        return (key, partner) if partner is not None else None

    @staticmethod
    async def listed(
        session: AsyncSession, partner_id: str, customer_id: str | None, include_revoked: bool
    ) -> list[VirtualKey]:
        """A partner's keys (a customer's: the keys it owns or is billed for), oldest first."""
        q = select(VirtualKey).where(VirtualKey.partner_id == partner_id, col(VirtualKey.status).not_in(UNBORN))
        if not include_revoked:
            q = q.where(VirtualKey.status != "revoked")
        if customer_id is not None:
            q = q.where(
                (col(VirtualKey.owner_customer_id) == customer_id)
                | (col(VirtualKey.billing_customer_id) == customer_id)
            )
        return list((await session.exec(q.order_by(col(VirtualKey.created_at), col(VirtualKey.id)))).all())

    # -- what a crash can leave half done --------------------------------------------

    async def unsettled_revoked(self) -> Sequence[VirtualKey]:
        """Revoked keys whose money has not gone back to their partner yet."""
        q = select(VirtualKey).where(VirtualKey.status == "revoked", col(VirtualKey.settled_on_revoke).is_(False))
        async with self.sessions() as session:
            return (await session.exec(q)).all()

    async def provisioning_before(self, cutoff_unix: int) -> Sequence[VirtualKey]:
        q = select(VirtualKey).where(VirtualKey.status == "provisioning", VirtualKey.created_at < cutoff_unix)
        async with self.sessions() as session:
            return (await session.exec(q)).all()

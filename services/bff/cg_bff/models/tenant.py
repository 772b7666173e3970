"""The tenant API's one table (migration ``0004_tenant``): what each Idempotency-Key
was first used for.

keys and the ledger make a retried call converge on its first outcome, but keys answers
a create replayed with *another* body as a replay of the first (it keys the row by the
idempotency key alone). So the BFF keeps, per tenant scope and Idempotency-Key, a
fingerprint of the request it first carried (the action, its path ids, its body); the
same key with another request is refused (409 ``idempotency_key_reused``) before
anything reaches keys or the ledger. Rows are permanent, like the ledger's ids.
"""

from __future__ import annotations

from sqlmodel import BigInteger, Column, Field, SQLModel


class IdempotencyRecord(SQLModel, table=True):
    __tablename__ = "tenant_idempotency"

    # Whose keys these are: "partner:<id>", "customer:<id>" or "admin".
    scope: str = Field(primary_key=True, max_length=80)
    idempotency_key: str = Field(primary_key=True, max_length=80)
    # What the key was used for ("keys.create", "ai_credits.grant", ...), for people.
    action: str = Field(max_length=40)
    # SHA-256 (hex) of the action, its path ids and its body, canonical JSON.
    fingerprint: str = Field(max_length=64)
    created_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))

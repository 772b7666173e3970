"""Identity tables: users, their browser sessions, invites, management API tokens and the
failed sign-ins that throttling counts (migration ``0001_identity``).

Nothing secret is stored as given: a session id, an invite token and an API token are
kept as the SHA-256 of the secret (the secret itself is only ever in the client's hands),
a password as its argon2id hash. Times are milliseconds since the epoch.
"""

from __future__ import annotations

from sqlmodel import BigInteger, Column, Field, ForeignKey, Index, SQLModel, String


class User(SQLModel, table=True):
    """A person who signs in: a platform admin, a partner's user (role owner / admin /
    viewer) or a customer's user. ``email`` is stored lower-cased, unique."""

    __tablename__ = "users"

    id: str = Field(primary_key=True, max_length=64)
    email: str = Field(max_length=254, unique=True)
    name: str = Field(default="", max_length=200)
    password_hash: str = Field(max_length=200)
    # admin | partner | customer
    kind: str = Field(max_length=16)
    partner_id: str | None = Field(default=None, max_length=64, index=True)
    customer_id: str | None = Field(default=None, max_length=64, index=True)
    # partner users: owner | admin | viewer
    role: str | None = Field(default=None, max_length=16)
    created_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    password_changed_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class UserSession(SQLModel, table=True):
    """A browser session. ``id`` is the SHA-256 of the cookie's value; the row going away
    (sign-out, password change, the user removed) ends the session at once."""

    __tablename__ = "user_sessions"

    id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(
        sa_column=Column(String(64), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    created_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    # moved forward as requests come (at most every few seconds): idle expiry counts from it
    last_seen_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    # created + the maximum age: the session ends then whatever its activity
    expires_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    address: str = Field(default="", max_length=64)
    user_agent: str = Field(default="", max_length=200)


class Invite(SQLModel, table=True):
    """A single-use, expiring invitation to become a partner's user (with a role) or a
    customer's user. ``token_hash`` is the SHA-256 of the link's token."""

    __tablename__ = "invites"

    id: str = Field(primary_key=True, max_length=64)
    token_hash: str = Field(max_length=64, unique=True)
    # partner | customer
    kind: str = Field(max_length=16)
    partner_id: str = Field(max_length=64, index=True)
    customer_id: str | None = Field(default=None, max_length=64)
    role: str | None = Field(default=None, max_length=16)
    email: str = Field(max_length=254)
    invited_by: str = Field(default="", max_length=254)  # the inviter's email, for display
    created_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    accepted_at_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    revoked_at_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    user_id: str | None = Field(default=None, max_length=64)  # the user the accepted invite made


class ApiToken(SQLModel, table=True):
    """A partner's management API token (``cgm_...``), stored as its SHA-256."""

    __tablename__ = "api_tokens"

    id: str = Field(primary_key=True, max_length=64)
    partner_id: str = Field(max_length=64, index=True)
    name: str = Field(max_length=200)
    # read | write
    scope: str = Field(max_length=8)
    token_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16)
    created_by: str = Field(default="", max_length=254)  # the creator's email, for display
    created_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_used_at_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    revoked_at_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class SigninFailure(SQLModel, table=True):
    """One failed sign-in, counted against a bucket (``account:<sha256 of the email>`` or
    ``address:<client address>``) for as long as the throttling window lasts. In the
    database, not in memory, so that every replica of the BFF counts the same failures."""

    __tablename__ = "signin_failures"
    __table_args__ = (Index("ix_signin_failures_bucket_at", "bucket", "at_ms"), Index("ix_signin_failures_at", "at_ms"))

    id: int | None = Field(default=None, primary_key=True)
    bucket: str = Field(max_length=100)
    at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))

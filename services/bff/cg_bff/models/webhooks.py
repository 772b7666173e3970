"""Webhook tables: partners' endpoints, the events the worker reported, one delivery per
(event, endpoint), and every attempt made (migration ``0003_webhooks``).

A signing secret is kept encrypted (``cg_bff.webhooks.secrets``: AES-256-GCM under the
BFF's key ring, bound to the endpoint's id), never as given: the worker needs it to sign,
so it cannot be a hash. Times are milliseconds since the epoch.
"""

from __future__ import annotations

from sqlmodel import JSON, BigInteger, Column, Field, ForeignKey, Index, SQLModel, String, Text, UniqueConstraint


class WebhookEndpoint(SQLModel, table=True):
    """A partner's endpoint: where, which event types, whether enabled, its secret."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (UniqueConstraint("partner_id", "idempotency_key", name="ux_webhook_endpoints_partner_idem"),)

    id: str = Field(primary_key=True, max_length=64)
    partner_id: str = Field(max_length=64, index=True)
    url: str = Field(max_length=2000)
    description: str = Field(default="", max_length=500)
    # event type names ("key.exhausted", ...), sorted
    event_types: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    enabled: bool = True
    secret_sealed: str = Field(sa_column=Column(Text, nullable=False))
    # the secret a rotation replaced: still signs until previous_expires_at_ms
    previous_secret_sealed: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    previous_expires_at_ms: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    # the create's Idempotency-Key (a retry answers the first endpoint, without its secret)
    idempotency_key: str | None = Field(default=None, max_length=80)
    # the last rotation's Idempotency-Key (a retry rotates nothing again)
    rotation_key: str | None = Field(default=None, max_length=80)
    created_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class WebhookEvent(SQLModel, table=True):
    """An occurrence the worker published, once per id (its body is what every endpoint
    receives, byte for byte)."""

    __tablename__ = "webhook_events"

    id: str = Field(primary_key=True, max_length=200)
    partner_id: str = Field(max_length=64, index=True)
    type: str = Field(max_length=64)
    occurred_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    payload: str = Field(sa_column=Column(Text, nullable=False))
    created_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class WebhookDelivery(SQLModel, table=True):
    """One event to one endpoint. ``state``: pending | succeeded | dead. ``generation``
    counts redelivers; ``attempts`` counts the attempts of the current generation."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="ux_webhook_deliveries_event_endpoint"),
        Index("ix_webhook_deliveries_endpoint_created", "endpoint_id", "created_at_ms", "id"),
    )

    id: str = Field(primary_key=True, max_length=64)
    partner_id: str = Field(max_length=64, index=True)
    endpoint_id: str = Field(
        sa_column=Column(String(64), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False)
    )
    event_id: str = Field(
        sa_column=Column(String(200), ForeignKey("webhook_events.id", ondelete="CASCADE"), nullable=False)
    )
    event_type: str = Field(max_length=64)
    state: str = Field(default="pending", max_length=16)
    generation: int = 0
    attempts: int = 0
    last_status_code: int = 0
    last_error: str = Field(default="", max_length=500)
    last_attempt_at_ms: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    next_attempt_at_ms: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    # the worker attempting it holds it until then (WebhookService.ClaimDelivery)
    lease_until_ms: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    created_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class WebhookAttempt(SQLModel, table=True):
    """One attempt's outcome: succeeded | retrying | dead (the last, dead-lettering one)."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        UniqueConstraint("delivery_id", "generation", "attempt", name="ux_webhook_attempts_delivery_gen_attempt"),
    )

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(
        sa_column=Column(String(64), ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False)
    )
    generation: int
    attempt: int
    outcome: str = Field(max_length=16)
    status_code: int = 0
    error: str = Field(default="", max_length=500)
    response_excerpt: str = Field(default="", max_length=500)
    duration_ms: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))

"""The webhook API's request and answer bodies. Times are RFC 3339 date-times in UTC; ids
are opaque strings; event types are the names of ``events.SUBSCRIBABLE``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from cg_bff.models.webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from cg_bff.webhooks.events import SUBSCRIBABLE

DeliveryStateName = Literal["pending", "succeeded", "dead"]
MAX_KEEP_PREVIOUS_S = 7 * 86400


def _known(name: str) -> str:
    if name not in SUBSCRIBABLE:
        raise ValueError(f"unknown event type {name[:64]!r}; one of {', '.join(SUBSCRIBABLE)}")
    return name


EventTypeName = Annotated[str, AfterValidator(_known), WithJsonSchema({"type": "string", "enum": list(SUBSCRIBABLE)})]
EventTypes = Annotated[list[EventTypeName], Field(min_length=1, max_length=len(SUBSCRIBABLE))]
Url = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2000,
        description="https:// to a public host (a host that resolves to a loopback, private or link-local "
        "address is refused).",
        examples=["https://billing.example.com/hooks/creditgate"],
    ),
]


def _text(value: str) -> str:
    if any(c in value for c in "\x00\r") or not value.replace("\n", "").replace("\t", "").isprintable():
        raise ValueError("printable characters only")
    return value


Description = Annotated[str, Field(max_length=500), AfterValidator(_text)]


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _at(ms: int) -> datetime | None:
    return at(ms) if ms else None


class WebhookEndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url
    description: Description = ""
    event_types: EventTypes
    enabled: bool = True


class WebhookEndpointUpdate(BaseModel):
    """Fields to change; those left out stay."""

    model_config = ConfigDict(extra="forbid")

    url: Url | None = None
    description: Description | None = None
    event_types: EventTypes | None = None
    enabled: bool | None = None


class WebhookEndpointPublic(BaseModel):
    id: str
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime
    # A rotated-out secret still signs (beside the current one) until then.
    previous_secret_expires_at: datetime | None = None

    @classmethod
    def of(cls, ep: WebhookEndpoint, now_ms: int) -> WebhookEndpointPublic:
        keeps = ep.previous_secret_sealed is not None and ep.previous_expires_at_ms > now_ms
        return cls(
            id=ep.id,
            url=ep.url,
            description=ep.description,
            event_types=list(ep.event_types),
            enabled=ep.enabled,
            created_at=at(ep.created_at_ms),
            updated_at=at(ep.updated_at_ms),
            previous_secret_expires_at=at(ep.previous_expires_at_ms) if keeps else None,
        )


class WebhookEndpointCreated(BaseModel):
    endpoint: WebhookEndpointPublic
    secret: str | None = Field(
        description="The signing secret (whsec_...), shown this once. null when the request was a retry of one "
        "already answered (replayed): rotate the secret if it was lost."
    )
    replayed: bool = False


class WebhookSecretRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_previous_s: int = Field(
        default=86400,
        ge=0,
        le=MAX_KEEP_PREVIOUS_S,
        description="How long the current secret keeps signing beside the new one (each webhook then carries two "
        "signatures), so receivers can switch without losing any; 0: it stops at once (a leaked secret).",
    )


class WebhookAttemptPublic(BaseModel):
    generation: int
    attempt: int
    outcome: Literal["succeeded", "retrying", "dead"]
    status_code: int | None = Field(description="The endpoint's HTTP status; null when it gave none.")
    error: str
    response_excerpt: str
    duration_ms: int
    at: datetime

    @classmethod
    def of(cls, a: WebhookAttempt) -> WebhookAttemptPublic:
        return cls(
            generation=a.generation,
            attempt=a.attempt,
            outcome=a.outcome,  # type: ignore[arg-type]  # the column holds one of the three
            status_code=a.status_code or None,
            error=a.error,
            response_excerpt=a.response_excerpt,
            duration_ms=a.duration_ms,
            at=at(a.at_ms),
        )


class WebhookDeliveryPublic(BaseModel):
    id: str
    endpoint_id: str
    event_id: str = Field(description="Sent as the webhook-id header: the same on every attempt and redeliver.")
    event_type: str
    state: DeliveryStateName = Field(description="pending, succeeded, or dead (dead-lettered: every attempt failed).")
    generation: int = Field(description="How many times it was redelivered.")
    attempts: int = Field(description="Attempts made in this generation.")
    last_status_code: int | None = None
    last_error: str
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, d: WebhookDelivery) -> WebhookDeliveryPublic:
        return cls(
            id=d.id,
            endpoint_id=d.endpoint_id,
            event_id=d.event_id,
            event_type=d.event_type,
            state=d.state,  # type: ignore[arg-type]  # the column holds one of the three
            generation=d.generation,
            attempts=d.attempts,
            last_status_code=d.last_status_code or None,
            last_error=d.last_error,
            last_attempt_at=_at(d.last_attempt_at_ms),
            next_attempt_at=_at(d.next_attempt_at_ms),
            created_at=at(d.created_at_ms),
            updated_at=at(d.updated_at_ms),
        )


class WebhookDeliveryDetail(WebhookDeliveryPublic):
    payload: dict[str, Any] = Field(description="The body sent, as JSON.")
    attempt_log: list[WebhookAttemptPublic] = Field(description="Every attempt, oldest first, all generations.")

    @classmethod
    def full(cls, d: WebhookDelivery, payload: str, attempts: list[WebhookAttempt]) -> WebhookDeliveryDetail:
        return cls(
            **WebhookDeliveryPublic.of(d).model_dump(),
            payload=json.loads(payload) if payload else {},
            attempt_log=[WebhookAttemptPublic.of(a) for a in attempts],
        )

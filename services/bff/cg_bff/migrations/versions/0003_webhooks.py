"""Webhooks: partners' endpoints, the events reported, deliveries and their attempts.

Revision ID: 0003_webhooks
Revises: 0002_usage
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_webhooks"
down_revision = "0002_usage"
branch_labels = None
depends_on = None


def _ms(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger, nullable=False)


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("event_types", sa.JSON, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("secret_sealed", sa.Text, nullable=False),
        sa.Column("previous_secret_sealed", sa.Text, nullable=True),
        _ms("previous_expires_at_ms"),
        sa.Column("idempotency_key", sa.String(80), nullable=True),
        sa.Column("rotation_key", sa.String(80), nullable=True),
        _ms("created_at_ms"),
        _ms("updated_at_ms"),
        sa.UniqueConstraint("partner_id", "idempotency_key", name="ux_webhook_endpoints_partner_idem"),
    )
    op.create_index("ix_webhook_endpoints_partner_id", "webhook_endpoints", ["partner_id"])
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        _ms("occurred_at_ms"),
        sa.Column("payload", sa.Text, nullable=False),
        _ms("created_at_ms"),
    )
    op.create_index("ix_webhook_events_partner_id", "webhook_events", ["partner_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column(
            "endpoint_id", sa.String(64), sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("event_id", sa.String(200), sa.ForeignKey("webhook_events.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_status_code", sa.Integer, nullable=False),
        sa.Column("last_error", sa.String(500), nullable=False),
        _ms("last_attempt_at_ms"),
        _ms("next_attempt_at_ms"),
        _ms("lease_until_ms"),
        _ms("created_at_ms"),
        _ms("updated_at_ms"),
        sa.UniqueConstraint("event_id", "endpoint_id", name="ux_webhook_deliveries_event_endpoint"),
    )
    op.create_index("ix_webhook_deliveries_partner_id", "webhook_deliveries", ["partner_id"])
    op.create_index(
        "ix_webhook_deliveries_endpoint_created", "webhook_deliveries", ["endpoint_id", "created_at_ms", "id"]
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "delivery_id", sa.String(64), sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("error", sa.String(500), nullable=False),
        sa.Column("response_excerpt", sa.String(500), nullable=False),
        _ms("duration_ms"),
        _ms("at_ms"),
        sa.UniqueConstraint("delivery_id", "generation", "attempt", name="ux_webhook_attempts_delivery_gen_attempt"),
    )


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_deliveries_endpoint_created", "webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_partner_id", "webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_webhook_events_partner_id", "webhook_events")
    op.drop_table("webhook_events")
    op.drop_index("ix_webhook_endpoints_partner_id", "webhook_endpoints")
    op.drop_table("webhook_endpoints")

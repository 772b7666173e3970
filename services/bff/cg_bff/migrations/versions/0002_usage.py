"""The usage read model: the request log and hourly aggregates.

Revision ID: 0002_usage
Revises: 0001_identity
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_usage"
down_revision = "0001_identity"
branch_labels = None
depends_on = None


def _big(name: str, primary_key: bool = False) -> sa.Column:
    return sa.Column(name, sa.BigInteger, nullable=False, primary_key=primary_key)


def upgrade() -> None:
    op.create_table(
        "usage_requests",
        sa.Column("request_id", sa.String(120), primary_key=True),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(120), nullable=False),
        _big("time_ms"),
        _big("input_tokens"),
        _big("output_tokens"),
        _big("cost_ucr"),
        _big("customer_charged_uai"),
        sa.Column("ai_credit_cents", sa.String(40), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(24), nullable=False),
        _big("latency_ms"),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("price_book_version", sa.String(60), nullable=False),
        _big("recorded_at_ms"),
    )
    op.create_index("ix_usage_requests_partner_time", "usage_requests", ["partner_id", "time_ms", "request_id"])
    op.create_index("ix_usage_requests_partner_key_time", "usage_requests", ["partner_id", "key_id", "time_ms"])
    op.create_index(
        "ix_usage_requests_partner_customer_time", "usage_requests", ["partner_id", "customer_id", "time_ms"]
    )
    op.create_index("ix_usage_requests_time", "usage_requests", ["time_ms"])
    op.create_table(
        "usage_hourly",
        sa.Column("partner_id", sa.String(64), primary_key=True),
        _big("hour_ms", primary_key=True),
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(120), primary_key=True),
        sa.Column("ai_credit_cents", sa.String(40), primary_key=True),
        _big("requests"),
        _big("input_tokens"),
        _big("output_tokens"),
        _big("cost_ucr"),
        _big("customer_charged_uai"),
        _big("estimated_requests"),
        _big("error_requests"),
        _big("latency_ms_total"),
    )
    op.create_index("ix_usage_hourly_hour", "usage_hourly", ["hour_ms"])


def downgrade() -> None:
    op.drop_index("ix_usage_hourly_hour", "usage_hourly")
    op.drop_table("usage_hourly")
    for name in (
        "ix_usage_requests_time",
        "ix_usage_requests_partner_customer_time",
        "ix_usage_requests_partner_key_time",
        "ix_usage_requests_partner_time",
    ):
        op.drop_index(name, "usage_requests")
    op.drop_table("usage_requests")

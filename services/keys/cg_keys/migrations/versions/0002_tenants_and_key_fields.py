"""Customers, self-service settings, every field of a key, fundings.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _col(name, type_, default):
    return sa.Column(name, type_, nullable=False, server_default=default)


def upgrade() -> None:
    for col in (
        _col("status", sa.String(16), "active"),
        _col("ss_enabled", sa.Boolean, sa.false()),
        _col("ss_apply_to_new", sa.Boolean, sa.false()),
        _col("ss_profit_multiplier", sa.String(40), "1.5"),
        _col("ss_ai_credit_cents", sa.String(40), "1"),
    ):
        op.add_column("partners", col)
    op.create_table(
        "customers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("partner_id", sa.String(64), sa.ForeignKey("partners.id"), nullable=False, index=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("ai_credits_enabled", sa.Boolean, nullable=False),
        sa.Column("ai_gateway_visible", sa.Boolean, nullable=False),
        sa.Column("api_access_enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    for col in (
        _col("description", sa.String(2000), ""),
        _col("status_reason", sa.String(200), ""),
        _col("kind", sa.String(16), "partner"),
        sa.Column("owner_customer_id", sa.String(64), nullable=True),
        _col("allowed_domains", sa.JSON, "[]"),
        sa.Column("billing_customer_id", sa.String(64), nullable=True),
        _col("profit_multiplier", sa.String(40), ""),
        _col("price_per_ai_credit_cents", sa.String(40), ""),
        _col("floor_usd_per_mtok", sa.String(40), ""),
        _col("auto_topup_enabled", sa.Boolean, sa.false()),
        _col("auto_topup_threshold_usd", sa.String(40), ""),
        _col("auto_topup_amount_usd", sa.String(40), ""),
        _col("rpm_limit", sa.Integer, "0"),
        _col("tpm_limit", sa.Integer, "0"),
        _col("expires_at", sa.BigInteger, "0"),
        _col("funded_ucr", sa.BigInteger, "0"),
        _col("refunded_ucr", sa.BigInteger, "0"),
        _col("last_used_at", sa.BigInteger, "0"),
        sa.Column("idempotency_key", sa.String(120), nullable=True),
        _col("settled_on_revoke", sa.Boolean, sa.false()),
    ):
        op.add_column("virtual_keys", col)
    op.create_index("ix_virtual_keys_owner_customer_id", "virtual_keys", ["owner_customer_id"])
    op.create_index("ux_virtual_keys_partner_idem", "virtual_keys", ["partner_id", "idempotency_key"], unique=True)
    op.create_table(
        "key_fundings",
        sa.Column("idempotency_id", sa.String(160), primary_key=True),
        sa.Column("key_id", sa.String(64), sa.ForeignKey("virtual_keys.id"), nullable=False, index=True),
        sa.Column("amount_ucr", sa.BigInteger, nullable=False),
        sa.Column("fee_ucr", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("key_fundings")
    op.drop_index("ux_virtual_keys_partner_idem", "virtual_keys")
    op.drop_index("ix_virtual_keys_owner_customer_id", "virtual_keys")
    op.drop_table("customers")

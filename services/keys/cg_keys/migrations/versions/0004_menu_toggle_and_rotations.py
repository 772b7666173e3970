"""The customer's AI Gateway menu toggle under its own name, idempotent customer
creates, and a record of key rotations (so a retried regenerate rotates once).

``customers.ai_gateway_visible`` always held the per-customer toggle; the answer now
calls "visible" what the three conditions decide together, so the column is renamed
to what it is.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.alter_column(
            "ai_gateway_visible",
            new_column_name="ai_gateway_menu_enabled",
            existing_type=sa.Boolean,
            existing_nullable=False,
        )
        batch.add_column(sa.Column("idempotency_key", sa.String(80), nullable=True))
    op.create_index("ux_customers_partner_idem", "customers", ["partner_id", "idempotency_key"], unique=True)
    op.create_table(
        "key_rotations",
        sa.Column("key_id", sa.String(64), sa.ForeignKey("virtual_keys.id"), primary_key=True),
        sa.Column("idempotency_key", sa.String(80), primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("key_rotations")
    op.drop_index("ux_customers_partner_idem", "customers")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("idempotency_key")
        batch.alter_column(
            "ai_gateway_menu_enabled",
            new_column_name="ai_gateway_visible",
            existing_type=sa.Boolean,
            existing_nullable=False,
        )

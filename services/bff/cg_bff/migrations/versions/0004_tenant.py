"""The tenant API: what each Idempotency-Key was first used for (``models.tenant``).

Revision ID: 0004_tenant
Revises: 0003_webhooks
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_tenant"
down_revision = "0003_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_idempotency",
        sa.Column("scope", sa.String(80), primary_key=True),
        sa.Column("idempotency_key", sa.String(80), primary_key=True),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tenant_idempotency")

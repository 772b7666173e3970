"""A partner's white-label branding (``models.branding``).

Revision ID: 0005_branding
Revises: 0004_tenant
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_branding"
down_revision = "0004_tenant"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partner_branding",
        sa.Column("partner_id", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.String(80), nullable=True),
        sa.Column("logo_url", sa.Text, nullable=True),
        sa.Column("primary_color", sa.String(7), nullable=True),
        sa.Column("accent_color", sa.String(7), nullable=True),
        sa.Column("updated_at_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("partner_branding")

"""Rate limits: reservations remember the key whose window they count in.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("reservations", sa.Column("rate_key", sa.String(80), nullable=False, server_default=""))
    # A limited key's window: its reservations of the last minute, newest first.
    op.create_index("ix_reservations_rate_key_created", "reservations", ["rate_key", "created_at_ms"])


def downgrade() -> None:
    op.drop_index("ix_reservations_rate_key_created", "reservations")
    op.drop_column("reservations", "rate_key")

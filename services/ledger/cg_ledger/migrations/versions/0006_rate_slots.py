"""Request slots: a lease of a rate-limited key carries request slots, counted in the
key's window until their deadline (``ratelimits``); requests settled from a lease count
their tokens in the window by the key the lease was taken for.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_slots",
        sa.Column("grant_id", sa.String(120), primary_key=True),
        sa.Column("rate_key", sa.String(80), nullable=False),
        sa.Column("lease_id", sa.String(120), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("end_ms", sa.BigInteger(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
    )
    # A limited key's window: its grants whose deadline is in the last minute.
    op.create_index("ix_rate_slots_rate_key_end", "rate_slots", ["rate_key", "end_ms"])
    op.create_index("ix_rate_slots_lease_id", "rate_slots", ["lease_id"])


def downgrade() -> None:
    op.drop_index("ix_rate_slots_lease_id", "rate_slots")
    op.drop_index("ix_rate_slots_rate_key_end", "rate_slots")
    op.drop_table("rate_slots")

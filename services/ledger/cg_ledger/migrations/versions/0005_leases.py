"""Budget leases: a reservation row is a request or a lease; a request settled from a lease
names it.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("reservations", sa.Column("kind", sa.String(8), nullable=False, server_default="request"))
    op.add_column("reservations", sa.Column("lease_id", sa.String(120), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("reservations", "lease_id")
    op.drop_column("reservations", "kind")

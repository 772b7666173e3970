"""Where a key's last automatic top-up failed, for the portal to show.

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
    op.add_column("virtual_keys", sa.Column("auto_topup_error", sa.String(200), nullable=False, server_default=""))
    op.add_column("virtual_keys", sa.Column("auto_topup_error_at", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("virtual_keys") as batch:
        batch.drop_column("auto_topup_error_at")
        batch.drop_column("auto_topup_error")

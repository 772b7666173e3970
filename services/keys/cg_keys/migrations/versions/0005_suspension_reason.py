"""Why a suspended key is suspended, as a vocabulary of its own (``suspension``:
``by_partner`` | ``deposit_line``) instead of a string matched in ``status_reason``, which
keeps people's words (a suspension's note).

A key the worker suspended below the deposit line (``status_reason = 'deposit_line'``)
becomes ``suspension = 'deposit_line'``; every other suspended key was suspended
deliberately (``by_partner``), and its reason stays as its note.

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
    op.add_column("virtual_keys", sa.Column("suspension", sa.String(16), nullable=False, server_default=""))
    op.execute(
        "UPDATE virtual_keys SET suspension = 'deposit_line', status_reason = ''"
        " WHERE status = 'suspended' AND status_reason = 'deposit_line'"
    )
    op.execute("UPDATE virtual_keys SET suspension = 'by_partner' WHERE status = 'suspended' AND suspension = ''")


def downgrade() -> None:
    op.execute(
        "UPDATE virtual_keys SET status_reason = 'deposit_line' WHERE status = 'suspended' AND suspension = 'deposit_line'"
    )
    with op.batch_alter_table("virtual_keys") as batch:
        batch.drop_column("suspension")

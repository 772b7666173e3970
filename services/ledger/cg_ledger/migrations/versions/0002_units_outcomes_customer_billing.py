"""Account units, stored failure outcomes, customer billing on reservations.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_RESERVATION_STRINGS = (
    "customer_account",
    "revenue_account",
    "profit_multiplier",
    "price_per_ai_credit_cents",
    "floor_usd_per_mtok",
)
_RESERVATION_AMOUNTS = (
    "customer_held_uai",
    "customer_charged_uai",
    "customer_unpaid_uai",
    "input_tokens",
    "output_tokens",
)


def upgrade() -> None:
    op.add_column("accounts", sa.Column("unit", sa.String(16), nullable=False, server_default="credits"))
    op.add_column("transfers", sa.Column("outcome", sa.String(24), nullable=False, server_default="ok"))
    for name in _RESERVATION_STRINGS:
        op.add_column("reservations", sa.Column(name, sa.String(80), nullable=False, server_default=""))
    for name in _RESERVATION_AMOUNTS:
        op.add_column("reservations", sa.Column(name, sa.BigInteger, nullable=False, server_default="0"))
    # The expiry sweep looks for pending reservations by expiry time.
    op.create_index("ix_reservations_status_expires", "reservations", ["status", "expires_at_ms"])
    # Statements page through an account's transfers newest first.
    op.create_index("ix_transfers_debit_id", "transfers", ["debit_account", "id"])
    op.create_index("ix_transfers_credit_id", "transfers", ["credit_account", "id"])
    # The skeleton named the outside account "external"; it is per unit now.
    op.execute("UPDATE accounts SET id = 'external:credits' WHERE id = 'external'")
    op.execute("UPDATE transfers SET debit_account = 'external:credits' WHERE debit_account = 'external'")


def downgrade() -> None:
    op.drop_index("ix_transfers_credit_id", "transfers")
    op.drop_index("ix_transfers_debit_id", "transfers")
    op.drop_index("ix_reservations_status_expires", "reservations")
    with op.batch_alter_table("reservations") as batch:
        for name in _RESERVATION_STRINGS + _RESERVATION_AMOUNTS:
            batch.drop_column(name)
    with op.batch_alter_table("transfers") as batch:
        batch.drop_column("outcome")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("unit")

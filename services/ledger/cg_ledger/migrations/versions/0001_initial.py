"""Accounts, transfers, reservations.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("debits_must_not_exceed_credits", sa.Boolean, nullable=False),
        sa.Column("debits_pending", sa.BigInteger, nullable=False),
        sa.Column("debits_posted", sa.BigInteger, nullable=False),
        sa.Column("credits_pending", sa.BigInteger, nullable=False),
        sa.Column("credits_posted", sa.BigInteger, nullable=False),
        sa.Column("created_at_ms", sa.BigInteger, nullable=False),
        sa.CheckConstraint(
            "NOT debits_must_not_exceed_credits OR debits_pending + debits_posted <= credits_posted",
            name="ck_accounts_no_overdraft",
        ),
        sa.CheckConstraint(
            "debits_pending >= 0 AND debits_posted >= 0 AND credits_pending >= 0 AND credits_posted >= 0",
            name="ck_accounts_counters_non_negative",
        ),
    )
    op.create_table(
        "transfers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("idempotency_id", sa.String(120), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("debit_account", sa.String(80), nullable=False, index=True),
        sa.Column("credit_account", sa.String(80), nullable=False, index=True),
        sa.Column("amount_ucr", sa.BigInteger, nullable=False),
        sa.Column("request_id", sa.String(120), nullable=True),
        sa.Column("memo", sa.String(200), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger, nullable=False),
        sa.CheckConstraint("amount_ucr >= 0", name="ck_transfers_amount_non_negative"),
    )
    op.create_table(
        "reservations",
        sa.Column("request_id", sa.String(120), primary_key=True),
        sa.Column("account", sa.String(80), nullable=False, index=True),
        sa.Column("credit_account", sa.String(80), nullable=False),
        sa.Column("model", sa.String(120), nullable=False),
        sa.Column("input_usd_per_mtok", sa.String(40), nullable=False),
        sa.Column("output_usd_per_mtok", sa.String(40), nullable=False),
        sa.Column("price_book_version", sa.String(60), nullable=False),
        sa.Column("held_ucr", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("charged_ucr", sa.BigInteger, nullable=False),
        sa.Column("unpaid_ucr", sa.BigInteger, nullable=False),
        sa.Column("usage_source", sa.String(16), nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger, nullable=False),
        sa.Column("created_at_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("reservations")
    op.drop_table("transfers")
    op.drop_table("accounts")

"""Integer-only counters, closed accounts, room for derived idempotency ids.

- SQLite: every counter and amount column gets ``CHECK (typeof(col) = 'integer')``, so
  an overflowing sum can never be stored as a REAL (SQLite turns an int64 overflow into
  a float silently); the tables are rebuilt (batch mode). PostgreSQL: the columns are
  BIGINT (made so if an older schema had them otherwise), which cannot hold anything else.
  A database whose counters already left the integers is not rebuilt: the upgrade stops
  and names the rows, which need a decision by hand (no value is rounded silently).
- ``accounts.closed_to``: where a closed account's releases go (RefundKey). Keys refunded
  before this revision are closed to the partner their first refund went to.
- ``transfers.idempotency_id`` holds 160 characters: a caller's 120 plus what the ledger
  appends (``:fee``, ``reserve:...:customer``, ``refund:settle:...``).
- PostgreSQL: ``transfers.id`` (a SERIAL, int4) becomes BIGINT with its sequence: every
  request writes two or more transfers, and 2^31 of them is not a lifetime. (SQLite's
  INTEGER PRIMARY KEY is 64-bit already.)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

INTEGERS = {
    "accounts": ("debits_pending", "debits_posted", "credits_pending", "credits_posted", "created_at_ms"),
    "transfers": ("amount_ucr", "created_at_ms"),
    "reservations": (
        "held_ucr",
        "customer_held_uai",
        "customer_charged_uai",
        "customer_unpaid_uai",
        "input_tokens",
        "output_tokens",
        "charged_ucr",
        "unpaid_ucr",
        "expires_at_ms",
        "created_at_ms",
    ),
}


def _refuse_non_integers(bind) -> None:
    bad = []
    for table, columns in INTEGERS.items():
        key = "id" if table != "reservations" else "request_id"
        for column in columns:
            rows = bind.execute(
                sa.text(f"SELECT {key}, {column} FROM {table} WHERE typeof({column}) != 'integer' LIMIT 5")
            ).all()
            bad += [f"{table}.{column} of {r[0]!r} = {r[1]!r}" for r in rows]
    if bad:
        raise RuntimeError(
            "ledger migration 0004: these values are not integers (a counter overflowed before the bound "
            "existed): " + "; ".join(bad) + ". Restore them from the transfers (AuditBooks names each account's "
            "expected counters) and run the migration again."
        )


def _integer_checks(batch, table: str) -> None:
    for column in INTEGERS[table]:
        batch.create_check_constraint(f"ck_{table}_{column}_integer", sa.text(f"typeof({column}) = 'integer'"))


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("accounts", sa.Column("closed_to", sa.String(80), nullable=False, server_default=""))
    op.execute(
        "UPDATE accounts SET closed_to = (SELECT t.credit_account FROM transfers t WHERE t.kind = 'refund'"
        " AND t.outcome = 'ok' AND t.debit_account = accounts.id ORDER BY t.id LIMIT 1)"
        " WHERE kind = 'key' AND EXISTS (SELECT 1 FROM transfers t WHERE t.kind = 'refund' AND t.outcome = 'ok'"
        " AND t.debit_account = accounts.id)"
    )
    if bind.dialect.name == "sqlite":
        _refuse_non_integers(bind)
        for table in INTEGERS:
            with op.batch_alter_table(table, recreate="always") as batch:
                if table == "transfers":
                    batch.alter_column("idempotency_id", type_=sa.String(160), existing_nullable=False)
                _integer_checks(batch, table)
        return
    op.alter_column("transfers", "idempotency_id", type_=sa.String(160), existing_nullable=False)
    op.alter_column("transfers", "id", type_=sa.BigInteger, existing_nullable=False)
    op.execute("ALTER SEQUENCE IF EXISTS transfers_id_seq AS BIGINT")
    inspector = sa.inspect(bind)
    for table, columns in INTEGERS.items():
        types = {c["name"]: c["type"] for c in inspector.get_columns(table)}
        for column in columns:
            if not isinstance(types[column], sa.BigInteger):
                op.alter_column(table, column, type_=sa.BigInteger, existing_nullable=False)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for table, columns in INTEGERS.items():
            with op.batch_alter_table(table, recreate="always") as batch:
                for column in columns:
                    batch.drop_constraint(f"ck_{table}_{column}_integer", type_="check")
                if table == "transfers":
                    batch.alter_column("idempotency_id", type_=sa.String(120), existing_nullable=False)
    else:
        op.alter_column("transfers", "idempotency_id", type_=sa.String(120), existing_nullable=False)
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("closed_to")

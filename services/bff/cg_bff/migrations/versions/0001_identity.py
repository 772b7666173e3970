"""Identity: users, browser sessions, invites, management API tokens, failed sign-ins.

Revision ID: 0001_identity
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_identity"
down_revision = None
branch_labels = None
depends_on = None


def _ms(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.BigInteger, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=True, index=True),
        sa.Column("customer_id", sa.String(64), nullable=True, index=True),
        sa.Column("role", sa.String(16), nullable=True),
        _ms("created_at_ms"),
        _ms("password_changed_at_ms"),
    )
    op.create_table(
        "user_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        _ms("created_at_ms"),
        _ms("last_seen_at_ms"),
        _ms("expires_at_ms"),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("user_agent", sa.String(200), nullable=False),
    )
    op.create_index("ix_user_sessions_user_id", "user_sessions", ["user_id"])
    op.create_index("ix_user_sessions_expires_at_ms", "user_sessions", ["expires_at_ms"])
    op.create_table(
        "invites",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=False, index=True),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("invited_by", sa.String(254), nullable=False),
        _ms("created_at_ms"),
        _ms("expires_at_ms"),
        _ms("accepted_at_ms", nullable=True),
        _ms("revoked_at_ms", nullable=True),
        sa.Column("user_id", sa.String(64), nullable=True),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("partner_id", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(254), nullable=False),
        _ms("created_at_ms"),
        _ms("last_used_at_ms", nullable=True),
        _ms("revoked_at_ms", nullable=True),
    )
    op.create_table(
        "signin_failures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("bucket", sa.String(100), nullable=False),
        _ms("at_ms"),
    )
    op.create_index("ix_signin_failures_bucket_at", "signin_failures", ["bucket", "at_ms"])
    op.create_index("ix_signin_failures_at", "signin_failures", ["at_ms"])


def downgrade() -> None:
    op.drop_table("signin_failures")
    op.drop_table("api_tokens")
    op.drop_table("invites")
    op.drop_table("user_sessions")
    op.drop_table("users")

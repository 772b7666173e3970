from __future__ import annotations

from typing import Literal

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CG_LEDGER_")

    host: str = "127.0.0.1"
    port: int = 50052
    metrics_port: int = 9102
    # With mutual TLS on (CG_TLS_*, cglib.tls): a plaintext port answering grpc.health.v1 only,
    # for probes that show no client certificate (the kubelet's gRPC probe).
    health_port: int = 50062
    database_url: str = "sqlite:///var/ledger.db"
    # Apply the database's migrations at start (make run, the tests, compose). false: the
    # migration Job does (Kubernetes, `python -m cg_ledger.migrate`) and this service waits up to
    # schema_wait_s for the database to reach its head, then stops saying so.
    migrate_at_start: bool = True
    schema_wait_s: float = 600.0
    default_reservation_ttl_s: int = 600
    # How often stale reservations are voided.
    expiry_sweep_s: float = 5.0
    # Where to publish partner balance changes (the worker needs them); empty: off.
    nats_url: str = ""
    # SQLite only: FULL syncs every (group) commit to disk before answering; NORMAL leaves
    # it to WAL checkpoints (less time per commit, docs/benchmarks.md; survives a process crash, but a
    # power loss may lose the last commits). PostgreSQL is the production database.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    log_level: str = "INFO"
    # How often gRPC health re-checks the database (NOT_SERVING while it does not answer).
    db_check_every_s: float = 2.0
    # The token operators send as gRPC metadata x-cg-admin-token to LedgerAdminService
    # (ListAccounts, AuditBooks). Empty: the admin service refuses every call.
    admin_token: SecretStr = SecretStr("")

    @field_validator("admin_token")
    @classmethod
    def _admin_token_strong_enough(cls, value: SecretStr) -> SecretStr:
        token = value.get_secret_value()
        if token and (len(token) < 16 or not token.isascii() or not token.isprintable()):
            raise ValueError(
                "CG_LEDGER_ADMIN_TOKEN: at least 16 printable ASCII characters (or empty: admin off);"
                " e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

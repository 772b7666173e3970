from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

_HERE = Path(__file__).parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CG_KEYS_")

    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = 9101
    database_url: str = "sqlite:///var/keys.db"
    catalog_path: Path = _HERE / "catalog.yaml"
    ledger_addr: str = "127.0.0.1:50052"
    nats_url: str = "nats://127.0.0.1:4222"
    rpc_timeout_s: float = 5.0
    # How often half-done operations (crashed creates, unrefunded revokes) are finished.
    reconcile_every_s: float = 10.0
    # At most this many automatic top-ups per key in any 24 hours.
    auto_topup_daily_max: int = 5
    log_level: str = "INFO"
    # How often gRPC health re-checks the database (NOT_SERVING while it does not answer).
    db_check_every_s: float = 2.0

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CG_LEDGER_")

    host: str = "127.0.0.1"
    port: int = 50052
    metrics_port: int = 9102
    database_url: str = "sqlite:///var/ledger.db"
    default_reservation_ttl_s: int = 600
    # How often stale reservations are voided.
    expiry_sweep_s: float = 5.0
    # Where to publish partner balance changes (the worker needs them); empty: off.
    nats_url: str = ""
    log_level: str = "INFO"

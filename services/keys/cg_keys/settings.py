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
    log_level: str = "INFO"

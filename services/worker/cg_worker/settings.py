from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CG_WORKER_")

    host: str = "127.0.0.1"
    metrics_port: int = 9104
    nats_url: str = "nats://127.0.0.1:4222"
    durable_name: str = "worker-usage"
    batch_size: int = 64
    log_level: str = "INFO"

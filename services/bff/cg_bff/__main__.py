"""Entry point: ``python -m cg_bff``."""

from __future__ import annotations

import uvicorn
from pydantic_settings import BaseSettings, SettingsConfigDict

from cg_bff.app import create_app
from cglib.logs import setup_logging


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CG_BFF_")

    host: str = "127.0.0.1"
    port: int = 8090
    proxy_public_url: str = "http://127.0.0.1:8080/v1"
    log_level: str = "INFO"


if __name__ == "__main__":
    settings = Settings()
    setup_logging("bff", settings.log_level)
    uvicorn.run(
        create_app(settings.proxy_public_url),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )

"""Entry point: ``python -m cg_mock_upstream``."""

from __future__ import annotations

import uvicorn
from pydantic_settings import BaseSettings, SettingsConfigDict

from cg_mock_upstream.app import create_app
from cglib.logs import setup_logging


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CG_MOCK_")

    host: str = "127.0.0.1"
    port: int = 8099
    chunk_delay_ms: int = 0
    # A broken provider: an HTTP error status (e.g. `503`) or `hang` for every POST.
    fail: str = ""
    log_level: str = "INFO"


if __name__ == "__main__":
    settings = Settings()
    setup_logging("mock-upstream", settings.log_level)
    uvicorn.run(
        create_app(settings.chunk_delay_ms, settings.fail),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
    )

from __future__ import annotations

from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict


class Upstream(BaseModel):
    base_url: str
    api_key: str = ""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CG_PROXY_", env_nested_delimiter="__")

    host: str = "127.0.0.1"
    port: int = 8080
    keys_addr: str = "127.0.0.1:50051"
    ledger_addr: str = "127.0.0.1:50052"
    nats_url: str = "nats://127.0.0.1:4222"
    # Deadline of each gRPC call on the request path.
    rpc_timeout_s: float = 2.0
    # How long an authenticated key is trusted without asking keys again.
    key_cache_ttl_s: float = 5.0
    # Providers by name (`openai`, `anthropic`, ...); a model whose provider is not
    # listed goes to `default_upstream` (the mock upstream under `make run`).
    upstreams: dict[str, Upstream] = {}
    default_upstream: Upstream = Upstream(base_url="http://127.0.0.1:8099/v1")
    upstream_timeout_s: float = 600.0
    reservation_ttl_s: int = 900
    # Seconds to let in-flight requests and pending settlements finish on SIGTERM.
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Upstream(BaseModel):
    """One provider, e.g. ``CG_PROXY_UPSTREAMS__ANTHROPIC__BASE_URL=https://api.anthropic.com/v1``,
    ``__API_KEY=...``, ``__API=anthropic``. Credentials come only from here (settings/env)."""

    # Where requests go: `<base_url>/chat/completions` for `openai`, `<base_url>/messages` for
    # `anthropic`. A query string is kept after the path (Azure's `?api-version=...`).
    base_url: str
    api_key: SecretStr = SecretStr("")
    # The wire format: `openai` for OpenAI-compatible APIs (OpenAI, Azure, Groq, Together,
    # Mistral, DeepSeek, vLLM, Ollama, Gemini's OpenAI endpoint), `anthropic` for the Messages API.
    api: Literal["openai", "anthropic"] = "openai"
    # For `openai`: the header that carries the key; `Authorization` sends `Bearer <key>`,
    # any other name (Azure: `api-key`) sends the key as is.
    api_key_header: str = "Authorization"
    # Longest wait for the provider's next byte (the reply's headers, or the next stream
    # chunk); unset: the proxy's `upstream_timeout_s`.
    timeout_s: float | None = Field(default=None, gt=0)
    # Extra attempts on connection errors, timeouts, 429 and 5xx before any byte reached the client.
    max_retries: int = Field(default=2, ge=0, le=10)
    # Other entries of `upstreams` to try, in order, once this one's retries end in such a
    # failure (and the fallbacks' own fallbacks after each): e.g. OpenAI → Azure OpenAI with
    # `CG_PROXY_UPSTREAMS__OPENAI__FALLBACKS='["azure"]'`. Unknown names and cycles stop the
    # proxy at start-up. The request is priced as the model asked for, whichever answers.
    fallbacks: list[str] = []
    # The name this upstream gives a model, by the catalog's upstream model, e.g. an Azure
    # deployment: `__MODELS='{"gpt-4o-mini": "my-gpt-4o-mini"}'`; a model not listed keeps its name.
    models: dict[str, str] = {}


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
    # Largest request body accepted (bytes); a larger one is refused with 413 before any charge.
    max_body_bytes: int = 4 * 1024 * 1024
    # Longest time to receive a request's whole body once its headers are in; then 408,
    # nothing held, and the connection closed (a client that promises a body and never
    # sends it must not hold a connection open).
    body_read_timeout_s: float = Field(default=30.0, gt=0)
    reservation_ttl_s: int = 900
    # Budget leases (docs/leases.md): requests of keys without rate limits reserve against a
    # worker-local lease instead of a Reserve call each; off, every request reserves on its own.
    leases: bool = True
    # A lease nothing used for this long is released (its unused part back with the payer),
    # checked every ``lease_sweep_s``.
    lease_idle_s: float = Field(default=30.0, gt=0)
    lease_sweep_s: float = Field(default=5.0, gt=0)
    # Seconds to let in-flight requests and pending settlements finish on SIGTERM.
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"
    # SQLite file of usage events waiting for NATS, one per process (replicas must not share
    # one); empty: `var/proxy-outbox-<port>.sqlite3` under the working directory. Worker
    # process i > 0 uses `<stem>.w<i><suffix>` beside it (cg_proxy.slots).
    outbox_path: str = ""
    # The journal of answered requests until they are settled (cg_proxy.journal), one per
    # process like the outbox; empty: `var/proxy-journal-<port>.log`.
    journal_path: str = ""
    # Worker processes serving the one port (cg_proxy.__main__); default: one per core.
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    # With more than one worker: the directory of their Prometheus files (cglib.multiproc),
    # emptied at every start; empty: `proxy-metrics-<port>` beside the journal.
    metrics_dir: str = ""

    def outbox_base(self) -> str:
        return self.outbox_path or f"var/proxy-outbox-{self.port}.sqlite3"

    def journal_base(self) -> str:
        return self.journal_path or f"var/proxy-journal-{self.port}.log"

    def metrics_base(self) -> str:
        return self.metrics_dir or str(Path(self.journal_base()).with_name(f"proxy-metrics-{self.port}"))

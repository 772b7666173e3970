"""The BFF's settings (``CG_BFF_*``), read once at the entry point."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cg_bff.webhooks.secretbox import parse_keys


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CG_BFF_")

    host: str = "127.0.0.1"
    port: int = 8090
    # The gRPC port of the BFF's internal service (webhook endpoints for the worker).
    grpc_port: int = 50053
    # With mutual TLS on (CG_TLS_*, cglib.tls): a plaintext port answering grpc.health.v1 only,
    # for probes that show no client certificate (the kubelet's gRPC probe).
    grpc_health_port: int = 50063
    database_url: str = "sqlite:///var/bff.db"
    # Apply the database's migrations at start (make run, the tests, compose). false: the
    # migration Job does (Kubernetes, `python -m cg_bff.migrate`) and this service waits up to
    # schema_wait_s for the database to reach its head, then stops saying so.
    migrate_at_start: bool = True
    schema_wait_s: float = 600.0
    keys_addr: str = "127.0.0.1:50051"
    ledger_addr: str = "127.0.0.1:50052"
    nats_url: str = "nats://127.0.0.1:4222"
    # What the portal's quick start shows developers as the gateway's base URL.
    proxy_public_url: str = "http://127.0.0.1:8080/v1"
    # The built portal (`make portal`): index.html and assets/. Without index.html, / is a
    # placeholder page that says to build it.
    portal_dir: Path = Path(__file__).resolve().parents[1] / "portal" / "dist"
    # The public URL of the BFF itself (invite links); its scheme decides Secure cookies
    # unless cookie_secure says otherwise.
    public_url: str = "http://127.0.0.1:8090"
    # Secure on the session cookie: None follows the request's scheme (https -> Secure).
    cookie_secure: bool | None = None
    # Sessions end after this long without a request, and at the latest after max_age.
    session_idle_s: int = 12 * 3600
    session_max_age_s: int = 7 * 86400
    # Sign-in throttling: failures allowed per account and per client address in the window.
    signin_window_s: int = 900
    signin_max_failures_per_account: int = 5
    signin_max_failures_per_address: int = 20
    invite_ttl_s: int = 7 * 86400
    # The first platform admin, created at start if no admin exists (empty: none).
    bootstrap_admin_email: str = ""
    bootstrap_admin_password: SecretStr = SecretStr("")
    # Usage read model: how long request-log rows and hourly aggregates are kept.
    usage_retention_days: int = 90
    # Usage events a BFF took but did not acknowledge (it died between its commit and its
    # acks) come back to a live one after this long.
    usage_ack_wait_s: float = Field(default=30.0, gt=0, le=3600)
    # Webhook URLs to loopback, private or link-local addresses are refused unless this is
    # on (development only: make run and the tests point webhooks at local servers).
    webhooks_allow_private: bool = False
    # The ledger's admin token, for the platform admin's audit view (empty: none).
    ledger_admin_token: SecretStr = SecretStr("")
    rpc_timeout_s: float = 5.0
    log_level: str = "INFO"
    # Identity: the shortest password accepted (a password equal to the email is refused too).
    password_min_length: int = 12
    # Webhooks: the token the worker must send on the internal gRPC port (its answers hold
    # signing secrets; empty: none asked, so keep that port private).
    internal_token: SecretStr = SecretStr("")
    # Webhooks: the key ring that seals signing secrets in the database (comma-separated
    # base64 keys of 32 bytes, the first seals; empty: kept unsealed, development only).
    webhook_secret_keys: SecretStr = SecretStr("")
    # Webhooks: endpoints a partner may register.
    webhooks_max_endpoints: int = 20
    # Webhooks: how long events, deliveries and their attempts are kept (0: for ever).
    webhooks_retention_days: int = 30

    @field_validator("webhook_secret_keys")
    @classmethod
    def _webhook_keys(cls, value: SecretStr) -> SecretStr:
        parse_keys(value.get_secret_value())  # a wrong key stops the BFF at start, saying how to fix it
        return value

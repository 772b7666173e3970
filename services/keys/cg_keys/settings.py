from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

_HERE = Path(__file__).parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CG_KEYS_")

    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = 9101
    # With mutual TLS on (CG_TLS_*, cglib.tls): a plaintext port answering grpc.health.v1 only,
    # for probes that show no client certificate (the kubelet's gRPC probe).
    health_port: int = 50061
    database_url: str = "sqlite:///var/keys.db"
    # Apply the database's migrations at start (make run, the tests, compose). false: the
    # migration Job does (Kubernetes, `python -m cg_keys.migrate`) and this service waits up to
    # schema_wait_s for the database to reach its head, then stops saying so.
    migrate_at_start: bool = True
    schema_wait_s: float = 600.0
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

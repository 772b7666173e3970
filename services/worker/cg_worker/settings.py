from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CG_WORKER_")

    host: str = "127.0.0.1"
    metrics_port: int = 9104
    nats_url: str = "nats://127.0.0.1:4222"
    keys_addr: str = "127.0.0.1:50051"
    ledger_addr: str = "127.0.0.1:50052"
    rpc_timeout_s: float = 5.0
    batch_size: int = 64
    # After a batch's first event, how long to let more arrive before handling them together
    # (a burst of usage events of one key costs one check): the delay every rule may add.
    linger_s: float = 0.1
    # How long a delivered event may stay unacknowledged before JetStream redelivers it
    # (e.g. to another replica, after this one died).
    ack_wait_s: float = 30.0
    # Below this many available credits, a partner's customer-created keys are suspended.
    deposit_line_credits: int = 1_000
    log_level: str = "INFO"

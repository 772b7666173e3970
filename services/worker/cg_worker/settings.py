from __future__ import annotations

from pydantic import SecretStr
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
    # Each round reads the key and its partner's keys and balances (four calls to keys and
    # the ledger), so at a steady load their CPU follows the rounds per second: 0.25 s cut
    # keys' share by a third against 0.1 s (docs/benchmarks.md, "Figures behind design choices").
    linger_s: float = 0.25
    # How long a delivered event may stay unacknowledged before JetStream redelivers it
    # (e.g. to another replica, after this one died).
    ack_wait_s: float = 30.0
    # Below this many available credits, a partner's customer-created keys are suspended.
    deposit_line_credits: int = 1_000
    log_level: str = "INFO"
    # -- webhooks (cg_worker.webhook_events, cg_worker.webhook_delivery) ------------------
    # The BFF's internal gRPC service (delivery claims, attempt reports) and its token
    # (the BFF's CG_BFF_INTERNAL_TOKEN; empty when it asks none).
    bff_addr: str = "127.0.0.1:50053"
    bff_token: SecretStr = SecretStr("")
    # Deliver to loopback / private / link-local addresses too, over http as well
    # (development only: the devstack and the tests point webhooks at local servers).
    webhooks_allow_private: bool = False
    # One attempt's HTTP timeout (the whole request: connect, send, first bytes of the answer).
    webhook_timeout_s: float = 10.0
    # Attempts before a delivery is dead-lettered, and the exponential backoff between them:
    # first delay, then x factor, at most max (with 10% jitter): 10 s, 40 s, 160 s, ~11 min,
    # ~43 min, 2 h, 2 h: 8 attempts over about 5 hours.
    webhook_max_attempts: int = 8
    webhook_retry_first_s: float = 10.0
    webhook_retry_factor: float = 4.0
    webhook_retry_max_s: float = 7200.0
    # Deliveries attempted at once by this replica.
    webhook_concurrency: int = 32
    # Deliveries waiting for a retry at once (the job consumer's max_ack_pending): past it,
    # new jobs wait until some retries end.
    webhook_max_waiting: int = 50_000
    # key.low_budget: a partner key's settled remaining budget below this share of its funded total.
    low_budget_percent: int = 10
    # partner.balance_low: a partner's settled balance below this many credits (twice the
    # deposit line by default: the warning comes before customer keys are suspended).
    balance_low_credits: int = 2_000

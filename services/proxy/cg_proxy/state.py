"""What the proxy's handlers share, built once by the lifespan in ``app``."""

from __future__ import annotations

from dataclasses import dataclass, field

from cg_proxy.collaborators import Authenticator, EventBus, Ledger, Probe, Recorder, UpstreamPool
from cg_proxy.settings import Settings


@dataclass
class ProxyState:
    settings: Settings
    auth: Authenticator
    ledger: Ledger
    upstreams: UpstreamPool
    recorder: Recorder
    bus: EventBus
    # /readyz's checks besides NATS, by dependency ("keys", "ledger" over gRPC health)
    probes: dict[str, Probe] = field(default_factory=dict)

"""What the proxy's handlers share, built once by the lifespan in ``app``."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from cg_proxy.auth import KeyAuthenticator
from cg_proxy.bus import Bus
from cg_proxy.metering import Meter
from cg_proxy.settings import Settings
from cg_proxy.upstream import Upstreams
from cg_proxy.usage import UsageRecorder


@dataclass
class ProxyState:
    settings: Settings
    auth: KeyAuthenticator
    meter: Meter
    upstreams: Upstreams
    recorder: UsageRecorder
    bus: Bus
    keys_channel: grpc.aio.Channel
    ledger_channel: grpc.aio.Channel

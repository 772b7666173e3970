"""What the app's lifespan builds once and every route and background job shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_bff.backends import Backends
from cg_bff.principal import Authenticator
from cg_bff.settings import Settings
from cglib.tls import Tls


@dataclass
class BffState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    backends: Backends
    auth: Authenticator
    # The NATS connection, once made (the BFF serves without it: live updates and the
    # usage read model wait for it).
    nats: Client | None = None
    # Per-feature shared objects (the live-update hub, the webhook publisher, ...), by name.
    extras: dict[str, Any] = field(default_factory=dict)
    # Mutual TLS of its gRPC channels and internal gRPC port (cglib.tls); None: plaintext.
    tls: Tls | None = None

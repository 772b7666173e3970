"""Entry point: ``python -m cg_keys``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_keys.catalog import load_catalog
from cg_keys.servicer import KeysServicer
from cg_keys.settings import Settings
from cglib.db import make_engine, migrate
from cglib.grpc_server import create_server, serve
from cglib.logs import setup_logging
from cglib.metrics import serve_metrics
from creditgate.keys.v1 import keys_pb2, keys_pb2_grpc

log = logging.getLogger("cg_keys")
SERVICE_NAME = keys_pb2.DESCRIPTOR.services_by_name["KeysService"].full_name


async def main(settings: Settings) -> None:
    catalog = load_catalog(settings.catalog_path)
    engine = make_engine(settings.database_url)
    await migrate(engine, Path(__file__).parent / "migrations")
    sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
    servicer = KeysServicer(sessions, catalog)
    server, port, health = create_server(
        f"{settings.host}:{settings.port}",
        lambda s: keys_pb2_grpc.add_KeysServiceServicer_to_server(servicer, s),
        [SERVICE_NAME],
    )
    metrics_port = serve_metrics(settings.host, settings.metrics_port)
    log.info("keys listening", extra={"grpc_port": port, "metrics_port": metrics_port, "catalog": catalog.version})
    try:
        await serve(server, health, [SERVICE_NAME])
    finally:
        await engine.dispose()


if __name__ == "__main__":
    settings = Settings()
    setup_logging("keys", settings.log_level)
    asyncio.run(main(settings))

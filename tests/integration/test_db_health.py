"""Keys' and the ledger's gRPC health follow their database: with a real PostgreSQL
stopped, both say NOT_SERVING (server-wide and per service) within a few checks; once it
is started again they say SERVING and serve calls."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cg_devstack import Stack, StackConfig
from cg_keys.__main__ import SERVICE_NAME as KEYS_SERVICE
from cg_ledger.__main__ import SERVICE_NAME as LEDGER_SERVICE
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from support.postgres import PG_BIN, local_postgres

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not (PG_BIN / "initdb").exists(), reason="needs local PostgreSQL binaries to stop and start"),
]

CHECK_EVERY_S = "0.2"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def status(addr: str, service: str = "") -> int:
    with grpc.insecure_channel(addr) as channel:
        try:
            return (
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
                .status
            )
        except grpc.RpcError:
            return -1


def wait_for(addr: str, services: tuple[str, ...], want: int, timeout_s: float = 15) -> float:
    """Seconds until every one of ``services`` on ``addr`` reports ``want``."""
    start = time.monotonic()
    while any(status(addr, s) != want for s in services):
        assert time.monotonic() - start < timeout_s, (
            f"{addr} never reported {health_pb2.HealthCheckResponse.ServingStatus.Name(want)}"
        )
        time.sleep(0.05)
    return time.monotonic() - start


def test_health_follows_the_database_down_and_back():
    with local_postgres() as pg, tempfile.TemporaryDirectory(prefix="cg-dbhealth-") as var:
        server = pg.server
        keys_db, ledger_db = server.dsn(server.create_database("keys")), server.dsn(server.create_database("ledger"))
        config = StackConfig(
            var_dir=Path(var),
            services=("nats", "keys", "ledger"),
            keys_db=keys_db,
            ledger_db=ledger_db,
            env={
                "keys": {"CG_KEYS_DB_CHECK_EVERY_S": CHECK_EVERY_S},
                "ledger": {"CG_LEDGER_DB_CHECK_EVERY_S": CHECK_EVERY_S},
            },
        )
        with Stack(config) as stack:
            keys = (stack.keys_addr, ("", KEYS_SERVICE))
            ledger = (stack.ledger_addr, ("", LEDGER_SERVICE))
            for addr, services in (keys, ledger):
                wait_for(addr, services, SERVING)

            pg.stop()
            for addr, services in (keys, ledger):
                assert wait_for(addr, services, NOT_SERVING) < 10

            pg.start()
            for addr, services in (keys, ledger):
                assert wait_for(addr, services, SERVING) < 10
            with grpc.insecure_channel(stack.ledger_addr) as channel:  # and it serves calls again
                stub = ledger_pb2_grpc.LedgerServiceStub(channel)
                deposit = ledger_pb2.DepositRequest(idempotency_id="dep-1", account="partner:p1", amount_ucr=5_000)
                stub.Deposit(deposit, timeout=10)
                assert (
                    stub.GetBalance(ledger_pb2.GetBalanceRequest(account="partner:p1"), timeout=5).posted_ucr == 5_000
                )

"""The overspend race, end to end: two ledger replicas on one PostgreSQL database,
hammered by several client processes at once.

Acceptance: a key funded with 100 credits, 500 concurrent 1-credit reservations from
several processes → exactly 100 succeed, 400 are refused (FAILED_PRECONDITION), and
nothing else happens. Then duplicate settlements and retried reservations, each
raced from two processes through both replicas, charge every request exactly once.

The client processes are this file run as a script (``python test_ledger_race.py
--worker``): each reads its job as one JSON line on stdin, connects to both replicas,
answers ``ready``, waits for ``go`` (sent to all workers at once, so their calls
overlap), fires all its calls concurrently with grpc.aio and prints one JSON line of
per-call outcomes.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from cglib.money import UCR_PER_CREDIT as CREDIT

CALL_TIMEOUT_S = 20.0
# A 1-credit reservation: 100 output tokens at $100 per 1M tokens = $0.01 = 1 credit.
PRICE = {"input_usd_per_mtok": "0", "output_usd_per_mtok": "100.00", "price_book_version": "v"}
MAX_OUTPUT_TOKENS = 100


# -- the client worker (runs in its own process) -------------------------------------


async def _worker_main(job: dict) -> list[dict]:
    import grpc

    from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc

    channels = [grpc.aio.insecure_channel(addr) for addr in job["addrs"]]
    try:
        await asyncio.wait_for(asyncio.gather(*(ch.channel_ready() for ch in channels)), 15)
        stubs = [ledger_pb2_grpc.LedgerServiceStub(ch) for ch in channels]
        price = ledger_pb2.Price(**PRICE)

        async def call(request_id: str, replica: int) -> dict:
            stub = stubs[replica]
            out = {"id": request_id, "replica": replica, "pid": os.getpid(), "t0": time.time()}
            try:
                if job["op"] == "reserve":
                    resp = await stub.Reserve(
                        ledger_pb2.ReserveRequest(
                            request_id=request_id,
                            account=job["account"],
                            model="m",
                            price=price,
                            max_input_tokens=0,
                            max_output_tokens=MAX_OUTPUT_TOKENS,
                        ),
                        timeout=CALL_TIMEOUT_S,
                    )
                    out.update(r="ok", replayed=resp.replayed, held=resp.held_ucr)
                else:
                    resp = await stub.Settle(
                        ledger_pb2.SettleRequest(
                            request_id=request_id,
                            input_tokens=0,
                            output_tokens=MAX_OUTPUT_TOKENS,
                            usage_source=ledger_pb2.USAGE_SOURCE_PROVIDER,
                        ),
                        timeout=CALL_TIMEOUT_S,
                    )
                    out.update(
                        r="ok",
                        replayed=resp.replayed,
                        held=resp.held_ucr,
                        charged=resp.charged_ucr,
                        unpaid=resp.unpaid_ucr,
                    )
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    out.update(r="failed_precondition")
                else:
                    out.update(r="other", code=e.code().name, detail=e.details())
            except Exception as e:
                out.update(r="other", code=type(e).__name__, detail=str(e))
            out["t1"] = time.time()
            return out

        print("ready", flush=True)
        go = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if go.strip() != "go":
            raise SystemExit(f"worker: expected 'go', got {go!r}")
        return await asyncio.gather(*(call(rid, replica) for rid, replica in job["calls"]))
    finally:
        for ch in channels:
            await ch.close()


def _worker() -> None:
    job = json.loads(sys.stdin.readline())
    results = asyncio.run(_worker_main(job))
    print(json.dumps(results), flush=True)


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker()
    sys.exit(0)


# -- the tests -----------------------------------------------------------------------

import grpc
import pytest

from cg_devstack.procs import Proc, free_port, grpc_serving, start_on_free_ports
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc

pytestmark = pytest.mark.postgres  # its processes share one PostgreSQL server


@dataclass
class Replicas:
    dsn: str
    addrs: list[str]
    procs: list[Proc]
    channels: list[grpc.Channel]

    def stub(self, replica: int = 0) -> ledger_pb2_grpc.LedgerServiceStub:
        return ledger_pb2_grpc.LedgerServiceStub(self.channels[replica])

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ({p.log_path}) ---\n{p.tail(40)}" for p in self.procs)

    def tracebacks(self) -> list[str]:
        return [p.name for p in self.procs if "Traceback" in p.log_text()]


def _distinct_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@pytest.fixture(scope="module")
def replicas(pg_server, tmp_path_factory) -> Iterator[Replicas]:
    """Two ledger processes on one fresh PostgreSQL database, started at the same time
    (so both run the migrations at once, serialized by the advisory lock)."""
    log_dir = tmp_path_factory.mktemp("ledger-race")
    with pg_server.database("race") as dsn:
        procs, addrs = [], []
        channels: list[grpc.Channel] = []

        def replica(name: str):
            def build() -> Proc:
                grpc_port, metrics_port = _distinct_ports(2)
                addr = f"127.0.0.1:{grpc_port}"
                env = {
                    "CG_LEDGER_PORT": str(grpc_port),
                    "CG_LEDGER_METRICS_PORT": str(metrics_port),
                    "CG_LEDGER_DATABASE_URL": dsn,
                }
                proc = Proc.python_module(name, "cg_ledger", env, log_dir / f"{name}.log", grpc_serving(addr))
                proc.addr = addr
                return proc

            return build

        try:
            for name in ("ledger-a", "ledger-b"):
                procs.append(start_on_free_ports(replica(name)))
                addrs.append(procs[-1].addr)
            channels = [grpc.insecure_channel(a) for a in addrs]
            yield Replicas(dsn, addrs, procs, channels)
        finally:
            for ch in channels:
                ch.close()
            for p in procs:
                p.stop()


def _run_workers(replicas: Replicas, op: str, account: str, jobs: list[list[tuple[str, int]]]) -> list[dict]:
    """Runs one worker process per entry of ``jobs`` (each a list of ``(request_id,
    replica)``), releases them together, and returns every call's outcome."""
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        for _ in jobs
    ]
    try:
        for p, calls in zip(procs, jobs, strict=True):
            job = {"op": op, "account": account, "addrs": replicas.addrs, "calls": calls}
            p.stdin.write(json.dumps(job).encode() + b"\n")
        deadline = time.monotonic() + 30
        for p in procs:  # the barrier: every worker connected and waiting
            line = b""
            while not line.endswith(b"\n"):
                ready, _, _ = select.select([p.stdout], [], [], max(deadline - time.monotonic(), 0))
                chunk = p.stdout.read(1) if ready else b""
                if not chunk:
                    p.kill()
                    raise AssertionError(f"worker not ready: {line!r}\n{p.communicate()[1].decode(errors='replace')}")
                line += chunk
            assert line == b"ready\n", line
        for p in procs:
            p.stdin.write(b"go\n")
        results: list[dict] = []
        for p in procs:
            out, err = p.communicate(timeout=CALL_TIMEOUT_S + 15)
            assert p.returncode == 0, f"worker exited {p.returncode}:\n{err.decode(errors='replace')}"
            results.extend(json.loads(out.decode().strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _fund(replicas: Replicas, partner: str, key: str, deposit_credits: int, key_credits: int) -> None:
    stub = replicas.stub(0)
    stub.Deposit(
        ledger_pb2.DepositRequest(
            idempotency_id=f"dep-{partner}", account=partner, amount_ucr=deposit_credits * CREDIT
        ),
        timeout=10,
    )
    stub.Transfer(
        ledger_pb2.TransferRequest(
            idempotency_id=f"fund-{key}", debit_account=partner, credit_account=key, amount_ucr=key_credits * CREDIT
        ),
        timeout=10,
    )


def _balance(replicas: Replicas, account: str, replica: int = 0) -> tuple[int, int, int]:
    b = replicas.stub(replica).GetBalance(ledger_pb2.GetBalanceRequest(account=account), timeout=10)
    return b.posted_ucr, b.pending_ucr, b.available_ucr


def _others(results: list[dict]) -> list[dict]:
    return [r for r in results if r["r"] not in ("ok", "failed_precondition")]


def _check_clean(replicas: Replicas) -> None:
    assert all(p.running for p in replicas.procs), replicas.logs()
    assert not replicas.tracebacks(), f"tracebacks in {replicas.tracebacks()}:\n{replicas.logs()}"


def test_migrations_ran_once_for_both_replicas(replicas):
    import asyncpg

    async def versions() -> list[str]:
        conn = await asyncpg.connect(replicas.dsn)
        try:
            return [r[0] for r in await conn.fetch("SELECT version_num FROM alembic_version")]
        finally:
            await conn.close()

    assert len(asyncio.run(versions())) == 1
    _check_clean(replicas)


def test_500_concurrent_reservations_on_100_credits_exactly_100_succeed(replicas):
    partner, key = "partner:race", "key:race"
    stub = replicas.stub(0)
    stub.Deposit(ledger_pb2.DepositRequest(idempotency_id="dep", account=partner, amount_ucr=1000 * CREDIT), timeout=10)
    stub.Transfer(
        ledger_pb2.TransferRequest(
            idempotency_id="fund", debit_account=partner, credit_account=key, amount_ucr=100 * CREDIT
        ),
        timeout=10,
    )

    # 5 processes x 100 concurrent calls, half of each process's calls to each replica.
    jobs = [[(f"race-{w}-{i:03d}", i % 2) for i in range(100)] for w in range(5)]
    started = time.monotonic()
    results = _run_workers(replicas, "reserve", key, jobs)
    elapsed = time.monotonic() - started

    outcomes = Counter(r["r"] for r in results)
    assert len(results) == 500 and len({r["id"] for r in results}) == 500
    others = _others(results)
    assert not others, f"{len(others)} unexpected errors, e.g. {others[:5]}\n{replicas.logs()}"
    assert outcomes == {"ok": 100, "failed_precondition": 400}, f"{outcomes} in {elapsed:.1f}s"
    ok = [r for r in results if r["r"] == "ok"]
    assert all(r["held"] == CREDIT and not r["replayed"] for r in ok), ok[:5]
    # Both replicas answered (which one wins the 100 holds is the scheduler's business: on a
    # loaded machine one replica can take them all, and the sums above must hold either way).
    assert {r["replica"] for r in results} == {0, 1}, "both replicas should have answered"
    # The barrier worked: every process was still waiting on calls when the last one started.
    windows = [
        (min(r["t0"] for r in results if r["pid"] == pid), max(r["t1"] for r in results if r["pid"] == pid))
        for pid in {r["pid"] for r in results}
    ]
    assert len(windows) == 5 and max(w[0] for w in windows) < min(w[1] for w in windows), windows

    for replica in (0, 1):  # both replicas read the same database
        assert _balance(replicas, key, replica) == (100 * CREDIT, 100 * CREDIT, 0)
        assert _balance(replicas, partner, replica) == (900 * CREDIT, 0, 900 * CREDIT)
    _check_clean(replicas)


def test_duplicate_settles_and_reserve_retries_race_across_replicas(replicas):
    partner, key = "partner:settle", "key:settle"
    _fund(replicas, partner, key, deposit_credits=1000, key_credits=100)

    # 150 reservations from 3 processes on a 100-credit key: 100 holds.
    jobs = [[(f"settle-{w}-{i:03d}", i % 2) for i in range(50)] for w in range(3)]
    reserved = _run_workers(replicas, "reserve", key, jobs)
    assert not _others(reserved), f"{_others(reserved)[:5]}\n{replicas.logs()}"
    held_ids = sorted(r["id"] for r in reserved if r["r"] == "ok")
    assert len(held_ids) == 100
    assert _balance(replicas, key) == (100 * CREDIT, 100 * CREDIT, 0)

    # The same request ids reserved again, from two other processes at once, each
    # duplicate pair through different replicas: answered from the record, no new hold.
    jobs = [[(rid, (i + w) % 2) for i, rid in enumerate(held_ids)] for w in range(2)]
    retried = _run_workers(replicas, "reserve", key, jobs)
    assert not _others(retried), f"{_others(retried)[:5]}\n{replicas.logs()}"
    assert len(retried) == 200 and all(r["r"] == "ok" and r["replayed"] and r["held"] == CREDIT for r in retried), [
        r for r in retried if not (r["r"] == "ok" and r["replayed"] and r["held"] == CREDIT)
    ][:5]
    assert _balance(replicas, key) == (100 * CREDIT, 100 * CREDIT, 0)

    # Every hold settled twice at once, from two processes through different replicas.
    jobs = [[(rid, (i + w) % 2) for i, rid in enumerate(held_ids)] for w in range(2)]
    settled = _run_workers(replicas, "settle", key, jobs)
    others = _others(settled)
    assert not others, f"{len(others)} unexpected errors, e.g. {others[:5]}\n{replicas.logs()}"
    assert len(settled) == 200 and all(r["r"] == "ok" for r in settled), [r for r in settled if r["r"] != "ok"][:5]
    first = Counter(r["id"] for r in settled if not r["replayed"])
    assert first == Counter(held_ids), f"not settled exactly once: {[i for i in held_ids if first[i] != 1][:10]}"
    assert all((r["charged"], r["unpaid"]) == (CREDIT, 0) for r in settled), [
        r for r in settled if (r["charged"], r["unpaid"]) != (CREDIT, 0)
    ][:5]

    for replica in (0, 1):
        assert _balance(replicas, key, replica) == (0, 0, 0)  # posted dropped by exactly 100 credits
        assert _balance(replicas, partner, replica) == (900 * CREDIT, 0, 900 * CREDIT)
    _check_clean(replicas)

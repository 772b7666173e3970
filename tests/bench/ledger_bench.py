#!/usr/bin/env python
"""Throughput of the ledger's hot path: Reserve + Settle, and SettleBatch, over real gRPC.

Starts a real ``python -m cg_ledger`` per backend (SQLite file, then a throwaway
PostgreSQL database), funds a partner and its keys, then drives pairs of
``Reserve`` followed by ``Settle`` from asyncio tasks and prints one table:
pairs per second, p50/p99 latency of one pair, and errors.

Scenarios per backend:

- ``single key``: every pair on one key account (worst case for row contention);
- ``N keys``: pairs spread round-robin over N funded keys.

each at every requested concurrency (asyncio tasks sharing ``--channels`` channels).

Then, per scenario, settlement as the proxy does it: ``--batch-requests`` reservations
made first (not measured), then settled with ``SettleBatch`` in batches of
``--batch-size`` by ``--batch-concurrency`` tasks (several proxy replicas at once):
settled requests per second, p50/p99 latency of one batch.
Run it with ``make bench-ledger`` (``BENCH_ARGS=...`` passes options), or directly:

    .venv/bin/python tests/bench/ledger_bench.py --backends sqlite --seconds 2

Not a test: pytest does not collect it (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from cg_devstack.procs import Proc, free_port, grpc_serving
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # for support.postgres

UCR_PER_CREDIT = 1_000_000
PARTNER = "partner:bench"
# Funding: enough that no run can run out (one pair charges 16,500 ucr and holds 75,000).
SINGLE_KEY_BUDGET = 1_000_000 * UCR_PER_CREDIT  # 1M credits = 60M pairs
PER_KEY_BUDGET = 1_000 * UCR_PER_CREDIT  # 1k credits = 60k pairs per key
PRICE = ledger_pb2.Price(input_usd_per_mtok="0.15", output_usd_per_mtok="0.60", price_book_version="bench")
CHARGE_UCR = 16_500  # what Settle charges per pair at PRICE
USAGE_SINK = "platform:usage"  # where the ledger credits provider cost
RPC_TIMEOUT_S = 30.0  # per call (--rpc-timeout): a hang shows up as an error, never as a stuck benchmark


@dataclass
class Result:
    backend: str
    scenario: str
    concurrency: int
    pairs: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    ledger_cpu_s: float = 0.0  # CPU time of the ledger process (all threads) during the run
    host_busy: float = 0.0  # share of all cores busy during the run (everything: client, ledger, database)
    others_cores: float = 0.0  # CPU used by processes this script did not start, in cores (should be ~0)
    ours_cpu_s: float = 0.0  # CPU of this script, the ledger and the database server together
    client_cpu_s: float = 0.0  # CPU of this script (the load generator) alone
    unit: str = "pairs"  # what ``pairs`` counts: reserve+settle pairs, or settled requests (SettleBatch)

    @property
    def cpu_ms_per_pair(self) -> float:
        return self.ledger_cpu_s / self.pairs * 1000 if self.pairs else float("nan")

    @property
    def client_ms(self) -> float:
        """CPU of this script per pair (or settlement): the load itself must stay small."""
        return self.client_cpu_s / self.pairs * 1000 if self.pairs else float("nan")

    @property
    def all_ms(self) -> float:
        """CPU of client, ledger and database together per pair (or settlement): what the
        rate would be on a quiet machine is about ``cores * 1000 / all_ms``."""
        return self.ours_cpu_s / self.pairs * 1000 if self.pairs else float("nan")

    @property
    def rate(self) -> float:
        return self.pairs / self.elapsed_s if self.elapsed_s else 0.0

    def pct_ms(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        xs = sorted(self.latencies_s)
        return xs[min(len(xs) - 1, max(0, round(q * len(xs)) - 1))] * 1000


# -- CPU accounting (Linux /proc) ------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, all threads, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies over all cores since boot."""
    try:
        vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    return sum(vals[:8]) - idle, sum(vals[:8])


def tree_cpu_s(root: int) -> dict[int, float]:
    """CPU seconds of ``root`` and all its descendants (here: this script, the ledger and
    the throwaway PostgreSQL server with its backends), by pid, exited children included."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        # utime + stime, plus cutime + cstime: children that already exited (e.g.
        # PostgreSQL's autovacuum workers) count towards their parent.
        cpu[pid] = sum(int(f) for f in fields[11:15]) / tick
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in cpu:
            out[pid] = cpu[pid]
        todo += children.get(pid, [])
    return out


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# -- the ledger process, per backend ---------------------------------------------------


@contextlib.contextmanager
def sqlite_db(workdir: Path) -> Iterator[tuple[str, str]]:
    yield f"sqlite:///{workdir / 'ledger.db'}", "SQLite (WAL, file)"


@contextlib.contextmanager
def postgres_db() -> Iterator[tuple[str, str]]:
    from support.postgres import postgres_server

    with postgres_server() as server, server.database("bench") as dsn:
        yield dsn, f"PostgreSQL {pg_version(dsn)}"


def pg_version(dsn: str) -> str:
    import asyncpg

    async def q() -> str:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()

    return asyncio.run(q())


@contextlib.contextmanager
def ledger(db_url: str, workdir: Path, backend: str) -> Iterator[tuple[str, int]]:
    port, metrics_port = free_port(), free_port()
    addr = f"127.0.0.1:{port}"
    env = {
        "CG_LEDGER_HOST": "127.0.0.1",
        "CG_LEDGER_PORT": str(port),
        "CG_LEDGER_METRICS_PORT": str(metrics_port),
        "CG_LEDGER_DATABASE_URL": db_url,
        "CG_LEDGER_LOG_LEVEL": "WARNING",
    }
    proc = Proc.python_module("ledger", "cg_ledger", env, workdir / f"ledger-{backend}.log", grpc_serving(addr))
    proc.start()
    try:
        proc.wait_ready(60)
        assert proc.popen is not None
        yield addr, proc.popen.pid
    finally:
        code = proc.stop()
        log = proc.log_text().strip()
        if log:
            print(f"\n[{backend}] ledger log (exit {code}), last lines:\n{proc.tail(20)}\n", file=sys.stderr)


# -- the load --------------------------------------------------------------------------


def channels(addr: str, n: int) -> list[grpc.aio.Channel]:
    # A local subchannel pool per channel: otherwise channels to the same target share
    # one TCP connection and "more channels" measures nothing.
    opts = [("grpc.use_local_subchannel_pool", 1)]
    return [grpc.aio.insecure_channel(addr, options=opts) for _ in range(n)]


async def fund(stub, key_accounts: list[str], budget: int, run_id: str, concurrency: int = 16) -> None:
    total = budget * len(key_accounts)
    await stub.Deposit(
        ledger_pb2.DepositRequest(
            idempotency_id=f"{run_id}-dep-{len(key_accounts)}", account=PARTNER, amount_ucr=total
        ),
        timeout=RPC_TIMEOUT_S,
    )
    queue = iter(key_accounts)

    async def worker() -> None:
        for acct in queue:
            await stub.Transfer(
                ledger_pb2.TransferRequest(
                    idempotency_id=f"{run_id}-fund-{acct}",
                    debit_account=PARTNER,
                    credit_account=acct,
                    amount_ucr=budget,
                ),
                timeout=RPC_TIMEOUT_S,
            )

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def drive(
    stubs,
    key_accounts: list[str],
    concurrency: int,
    seconds: float,
    tag: str,
    result: Result,
    rpc_timeout_s: float = RPC_TIMEOUT_S,
) -> None:
    """``concurrency`` tasks loop Reserve -> Settle until ``seconds`` have passed."""
    seq = itertools.count()
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        stub = stubs[i % len(stubs)]
        while time.perf_counter() < deadline:
            n = next(seq)
            rid = f"{tag}-{n}"
            t0 = time.perf_counter()
            step = "reserve"
            try:
                await stub.Reserve(
                    ledger_pb2.ReserveRequest(
                        request_id=rid,
                        account=key_accounts[n % len(key_accounts)],
                        model="bench",
                        price=PRICE,
                        max_input_tokens=1000,
                        max_output_tokens=1000,
                        ttl_seconds=600,
                    ),
                    timeout=rpc_timeout_s,
                )
                step = "settle"
                await stub.Settle(
                    ledger_pb2.SettleRequest(
                        request_id=rid,
                        input_tokens=300,
                        output_tokens=200,
                        usage_source=ledger_pb2.USAGE_SOURCE_PROVIDER,
                    ),
                    timeout=rpc_timeout_s,
                )
            except grpc.aio.AioRpcError as e:
                result.errors[f"{step} {e.code().name}: {(e.details() or '')[:120]}"] += 1
                continue
            result.latencies_s.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    result.elapsed_s = time.perf_counter() - start
    result.pairs = len(result.latencies_s)


def _settle_request(rid: str) -> ledger_pb2.SettleRequest:
    return ledger_pb2.SettleRequest(
        request_id=rid, input_tokens=300, output_tokens=200, usage_source=ledger_pb2.USAGE_SOURCE_PROVIDER
    )


async def reserve_many(stubs, key_accounts: list[str], tag: str, result: Result, args) -> list[str]:
    """Reserves ``args.batch_requests`` requests round-robin over the keys (64 at a time);
    returns their request ids."""
    rids = [f"{tag}-{n}" for n in range(args.batch_requests)]
    todo = iter(enumerate(rids))

    async def reserver(i: int) -> None:
        stub = stubs[i % len(stubs)]
        for n, rid in todo:
            try:
                await stub.Reserve(
                    ledger_pb2.ReserveRequest(
                        request_id=rid,
                        account=key_accounts[n % len(key_accounts)],
                        model="bench",
                        price=PRICE,
                        max_input_tokens=1000,
                        max_output_tokens=1000,
                        ttl_seconds=3600,
                    ),
                    timeout=args.rpc_timeout,
                )
            except grpc.aio.AioRpcError as e:
                result.errors[f"reserve {e.code().name}: {(e.details() or '')[:120]}"] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(reserver(i) for i in range(64)))
    print(f"[{result.backend}] reserved {len(rids)} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return rids


async def settle_batches(stubs, rids: list[str], result: Result, args) -> None:
    """Settles every request of ``rids`` with ``SettleBatch``, ``args.batch_size`` at a
    time from ``args.batch_concurrency`` tasks."""
    batches = iter([rids[i : i + args.batch_size] for i in range(0, len(rids), args.batch_size)])

    async def settler(i: int) -> None:
        stub = stubs[i % len(stubs)]
        for batch in batches:
            t = time.perf_counter()
            try:
                out = await stub.SettleBatch(
                    ledger_pb2.SettleBatchRequest(settlements=[_settle_request(rid) for rid in batch]),
                    timeout=args.rpc_timeout,
                )
            except grpc.aio.AioRpcError as e:
                result.errors[f"settle batch {e.code().name}: {(e.details() or '')[:120]}"] += 1
                continue
            result.latencies_s.append(time.perf_counter() - t)
            for o in out.outcomes:
                if o.status_code:
                    result.errors[f"settle (code {o.status_code}): {o.error[:120]}"] += 1
                else:
                    result.pairs += 1

    start = time.perf_counter()
    await asyncio.gather(*(settler(i) for i in range(args.batch_concurrency)))
    result.elapsed_s = time.perf_counter() - start


async def check_balances(stub, single: str, settled_single: int, settled_all: int) -> list[str]:
    """After an error-free run: every hold released, and exactly one charge per pair
    (300 x 0.15 + 200 x 0.60 USD per 1M tokens = 16,500 ucr) posted."""
    problems = []
    b = await stub.GetBalance(ledger_pb2.GetBalanceRequest(account=single), timeout=RPC_TIMEOUT_S)
    want = SINGLE_KEY_BUDGET - settled_single * CHARGE_UCR
    if (b.posted_ucr, b.pending_ucr) != (want, 0):
        problems.append(f"{single}: posted {b.posted_ucr} pending {b.pending_ucr}, expected posted {want} pending 0")
    u = await stub.GetBalance(ledger_pb2.GetBalanceRequest(account=USAGE_SINK), timeout=RPC_TIMEOUT_S)
    if u.posted_ucr != settled_all * CHARGE_UCR:
        problems.append(f"{USAGE_SINK}: posted {u.posted_ucr}, expected {settled_all * CHARGE_UCR}")
    return problems


async def measured(load, res: Result, ledger_pid: int) -> None:
    """Runs ``load`` and records the CPU the ledger and everything else used meanwhile."""
    cpu0, (busy0, total0), ours0 = proc_cpu_s(ledger_pid), host_cpu(), tree_cpu_s(os.getpid())
    client0 = proc_cpu_s(os.getpid())
    await load
    (busy1, total1), ours1 = host_cpu(), tree_cpu_s(os.getpid())
    res.ledger_cpu_s = proc_cpu_s(ledger_pid) - cpu0
    res.client_cpu_s = proc_cpu_s(os.getpid()) - client0
    if total1 > total0 and res.elapsed_s:
        res.host_busy = (busy1 - busy0) / (total1 - total0)
        ours = sum(c - ours0.get(pid, 0.0) for pid, c in ours1.items())
        res.ours_cpu_s = ours
        res.others_cores = max(0.0, (busy1 - busy0) / os.sysconf("SC_CLK_TCK") - ours) / res.elapsed_s
    print(
        f"[{res.backend}] {res.scenario:>10} c={res.concurrency:<3} {res.rate:8.0f} {res.unit}/s  "
        f"p50 {res.pct_ms(0.50):6.2f} ms  p99 {res.pct_ms(0.99):7.2f} ms  errors {sum(res.errors.values())}  "
        f"ledger CPU {res.cpu_ms_per_pair:.2f} ms/{res.unit}  client CPU {res.client_ms:.2f} ms/{res.unit}  all CPU {res.all_ms:.2f} ms/{res.unit}  host busy {res.host_busy:.0%}  "
        f"other processes {res.others_cores:.2f} cores",
        file=sys.stderr,
    )


async def bench_backend(backend: str, addr: str, ledger_pid: int, args) -> tuple[list[Result], str]:
    run_id = uuid.uuid4().hex[:8]
    chans = channels(addr, args.channels)
    try:
        stubs = [ledger_pb2_grpc.LedgerServiceStub(ch) for ch in chans]
        single = ["key:bench-single"]
        many = [f"key:bench-{i:05d}" for i in range(args.keys)]
        t0 = time.perf_counter()
        await fund(stubs[0], single, SINGLE_KEY_BUDGET, run_id)
        await fund(stubs[0], many, PER_KEY_BUDGET, run_id)
        print(f"[{backend}] funded {1 + len(many)} keys in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        results = []
        settled = {True: 0, False: 0}  # pairs settled on the single key / on the many keys
        for scenario, keys in (("single key", single), (f"{len(many)} keys", many)):
            for conc in args.concurrency if args.pairs else ():
                tag = f"{run_id}-{len(keys)}k-c{conc}"
                warm = Result(backend, scenario, conc)
                await drive(stubs, keys, conc, args.warmup, f"{tag}-warm", warm, args.rpc_timeout)
                res = Result(backend, scenario, conc)
                await measured(drive(stubs, keys, conc, args.seconds, tag, res, args.rpc_timeout), res, ledger_pid)
                for what, n in warm.errors.items():
                    res.errors[f"(warm-up) {what}"] += n
                settled[keys is single] += warm.pairs + res.pairs
                results.append(res)
            if args.batch_requests:
                res = Result(
                    backend, f"{scenario}, SettleBatch x{args.batch_size}", args.batch_concurrency, unit="settled"
                )
                rids = await reserve_many(stubs, keys, f"{run_id}-{len(keys)}k-batch", res, args)
                await measured(settle_batches(stubs, rids, res, args), res, ledger_pid)
                settled[keys is single] += res.pairs
                results.append(res)
        if any(r.errors for r in results):
            check = "skipped (there were errors)"
        else:
            problems = await check_balances(stubs[0], single[0], settled[True], settled[True] + settled[False])
            check = (
                "ok (holds all released, one charge per pair)" if not problems else "MISMATCH: " + "; ".join(problems)
            )
            if problems:
                results[-1].errors["balance check: " + "; ".join(problems)] += 1
        print(f"[{backend}] balance check: {check}", file=sys.stderr)
        return results, check
    finally:
        for ch in chans:
            await ch.close()


def run_backend(backend: str, args) -> tuple[list[Result], str, str]:
    workdir = Path(tempfile.mkdtemp(prefix=f"cg-bench-{backend}-"))
    try:
        db = sqlite_db(workdir) if backend == "sqlite" else postgres_db()
        with db as (url, desc), ledger(url, workdir, backend) as (addr, pid):
            results, check = new_loop_run(bench_backend(backend, addr, pid, args), args.uvloop)
            return results, desc, check
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def new_loop_run(coro, use_uvloop: bool):
    if use_uvloop:
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


# -- report ----------------------------------------------------------------------------


def ledger_source() -> str:
    """Where the ledger child imports cg_ledger from, and whether it has uncommitted edits."""
    where = (
        subprocess.run(
            [sys.executable, "-c", "import cg_ledger, os; print(os.path.dirname(cg_ledger.__file__))"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        or "?"
    )
    try:
        src = Path(where)
        top = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
        ).stdout.strip()
        sha = subprocess.run(
            ["git", "-C", top, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "--no-optional-locks", "-C", top, "status", "--porcelain", "--", str(src.parent), "protos"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return f"{where} (git {sha}{', with uncommitted changes' if dirty else ''})"
    except (subprocess.CalledProcessError, FileNotFoundError):
        return where


def nproc() -> str:
    try:
        return subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return str(os.cpu_count())


def mem_total() -> str:
    try:
        kib = int(
            next(
                line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:")
            ).split()[1]
        )
        return f"{kib / 2**20:.1f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        return "? RAM"


def table(results: list[Result]) -> str:
    rows = [
        "| backend | scenario | concurrency | per second | p50 ms | p99 ms | errors | ledger CPU ms/each"
        " | client CPU ms/each | all CPU ms/each | host CPU busy | other processes, cores |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r.backend} | {r.scenario} | {r.concurrency} | {r.rate:,.0f} {r.unit} | {r.pct_ms(0.5):.2f} "
            f"| {r.pct_ms(0.99):.2f} | {sum(r.errors.values())} | {r.cpu_ms_per_pair:.2f} "
            f"| {r.client_ms:.2f} | {r.all_ms:.2f} | {r.host_busy:.0%} | {r.others_cores:.2f} |"
        )
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    p.add_argument("--seconds", type=float, default=5.0, help="measured time per run (default 5)")
    p.add_argument("--warmup", type=float, default=0.5, help="unmeasured time before each run (default 0.5)")
    p.add_argument("--concurrency", default="1,32", help="comma-separated concurrent tasks (default 1,32)")
    p.add_argument("--keys", type=int, default=1000, help="keys in the many-keys scenario (default 1000)")
    p.add_argument(
        "--channels",
        type=int,
        default=1,
        help="gRPC channels the tasks share round-robin (default 1: 4 were not faster, the ledger is the limit)",
    )
    p.add_argument(
        "--rpc-timeout",
        type=float,
        default=RPC_TIMEOUT_S,
        help="deadline of each Reserve and Settle, s (default 30; the proxy uses 2)",
    )
    p.add_argument(
        "--batch-requests",
        type=int,
        default=10_000,
        help="reservations settled with SettleBatch per scenario (default 10000; 0: skip)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="settlements per SettleBatch (default 256, the proxy's)")
    p.add_argument("--batch-concurrency", type=int, default=4, help="SettleBatch calls in flight (default 4)")
    p.add_argument(
        "--no-pairs", dest="pairs", action="store_false", help="skip the Reserve+Settle pair runs (SettleBatch only)"
    )
    p.add_argument("--no-uvloop", dest="uvloop", action="store_false", help="client on asyncio's default loop")
    args = p.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = set(args.backends) - {"sqlite", "postgres"}
    if bad:
        p.error(f"unknown backend(s): {', '.join(sorted(bad))}")
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not args.concurrency or min(args.concurrency) < 1 or args.keys < 1 or args.channels < 1:
        p.error("--concurrency, --keys and --channels must be positive")
    if args.uvloop:
        try:
            import uvloop  # noqa: F401  (only whether it is installed)
        except ImportError:
            args.uvloop = False
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(
        [
            os.path.relpath(sys.executable) if sys.executable.startswith(str(REPO)) else sys.executable,
            os.path.relpath(__file__),
            *(sys.argv[1:] if argv is None else argv),
        ]
    )
    started = time.perf_counter()
    load_before = loadavg()
    results: list[Result] = []
    descs, checks = {}, {}
    for backend in args.backends:
        res, descs[backend], checks[backend] = run_backend(backend, args)
        results += res

    print(f"date:     {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}")
    print(
        f"machine:  nproc {nproc()}, {mem_total()}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, "
        f"grpcio {grpc.__version__}, client loop {'uvloop' if args.uvloop else 'asyncio'}"
    )
    print(f"command:  {command}")
    worst = max((r.others_cores for r in results), default=0.0)
    print(
        f"quiet:    {'yes' if worst <= 0.1 else 'NO'}: other processes used at most {worst:.2f} cores during the "
        f"measured runs (load average {load_before} before, {loadavg()} after)"
    )
    print(f"ledger:   {ledger_source()}")
    print(f"backends: {'; '.join(f'{b}: {d}' for b, d in descs.items())}")
    print(
        f"runs:     {args.warmup:g} s warm-up + {args.seconds:g} s measured each; {args.channels} gRPC channel(s); "
        f"{args.rpc_timeout:g} s deadline per call; "
        f"a pair = Reserve (1000+1000 tokens max) then Settle (300+200 tokens); SettleBatch rows: "
        f"{args.batch_requests} reservations made first, then settled {args.batch_size} per call, "
        f"{args.batch_concurrency} calls in flight (p50/p99: of one call)"
    )
    print(f"checks:   {'; '.join(f'{b}: balances {c}' for b, c in checks.items())}")
    print()
    print(table(results))
    errors = Counter()
    for r in results:
        for what, n in r.errors.items():
            errors[f"{r.backend}, {r.scenario}, c={r.concurrency}: {what}"] += n
    if errors:
        print("\nerrors:")
        for what, n in errors.most_common():
            print(f"  {n:>6}  {what}")
    noisy = [r for r in results if r.others_cores > 0.1]
    if noisy:
        print("\nWARNING: other processes used CPU during these runs (not quiet; figures are low):")
        for r in noisy:
            print(f"  {r.backend}, {r.scenario}, c={r.concurrency}: {r.others_cores:.2f} cores")
    print(f"\ntotal time: {time.perf_counter() - started:.0f} s")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Gateway overhead: Creditgate's proxy beside a direct call and LiteLLM, in one run.

Starts the whole stack (NATS with JetStream, keys, ledger, proxy, worker — metering,
settlement and usage events all on, SQLite by default) with its providers pointed at the
fake nginx upstream of the benchmark harness beside this script (``harness/``, or
``CG_BENCH_HARNESS``; ``json``: gpt-4o-mini → :18001/v1, ``sse``: deepseek-chat →
:18001/sse/v1, ``slow``: mistral-small-latest → :18002/v1), funds one key, then runs that
harness's ``run.sh`` with the proxy as a target next to ``direct`` and the peers. The
harness prints its table (medians over rounds; ``d_p50_ms`` at c=1 is the added latency,
``rps_ratio`` at c=32 the throughput beside direct, ``cpu_s/1k`` the proxy's CPU per 1,000
requests, its worker processes included). This script adds the CPU and the peak resident
memory of every stack service (each with its child processes) per proxied request, checks
the ledger charged what the proxy served, and measures in-process what validating a request
body costs (parse + OpenAI's schema, the proxy's ``cg_proxy.request_checks``, on a typical
chat body).

``--proxy-workers`` runs the whole measurement once per proxy worker count, in order
(``0`` = one per core, the proxy's default): the first run measures every ``--targets``
entry, later runs measure Creditgate alone (labelled ``creditgate-w<N>``), so the peers are
not measured twice.

    make bench                                  # needs `make bench-setup` once (root)
    make bench BENCH_ARGS="--rounds 1 --targets 'direct creditgate'"
    make bench BENCH_ARGS="--proxy-workers '0 1'" # one worker per core, then one worker
    make bench BENCH_ARGS=--validation-only     # only the validation cost, no stack

Not a test: pytest does not collect it (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path

from ledger_bench import proc_cpu_s  # this script's neighbour (its folder is on sys.path)

from cg_devstack.seed import Seeder
from cg_devstack.stack import Stack, StackConfig

HARNESS = Path(os.environ.get("CG_BENCH_HARNESS") or Path(__file__).resolve().parent / "harness")
SERVICES = ("nats", "keys", "ledger", "proxy", "worker")
MODELS = {"json": "gpt-4o-mini", "sse": "deepseek-chat", "slow": "mistral-small-latest"}
UPSTREAMS = {
    "CG_PROXY_UPSTREAMS__OPENAI__BASE_URL": "http://127.0.0.1:18001/v1",
    "CG_PROXY_UPSTREAMS__DEEPSEEK__BASE_URL": "http://127.0.0.1:18001/sse/v1",
    "CG_PROXY_UPSTREAMS__MISTRAL__BASE_URL": "http://127.0.0.1:18002/v1",
}


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants, alive now (the proxy's worker processes)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds of ``pid`` and each live descendant, by pid."""
    return {p: proc_cpu_s(p) for p in tree_pids(pid)}


def tree_peak_rss_kb(pid: int) -> int:
    """The sum of VmHWM (peak resident memory) over ``pid`` and its live descendants."""
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


def stolen_ticks() -> tuple[int, int]:
    """The machine's CPU ticks the host gave to others (steal: a busy host), and all its
    ticks, so far (/proc/stat's first line: user to steal)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    ticks = [int(x) for x in fields[1:9]]
    return ticks[7], sum(ticks)


def usage_events(proxy_url: str) -> int:
    """Usage events the proxy published (or put in its outbox): one per answered request,
    whichever worker answered it (the proxy's /metrics sums its workers; the USAGE stream's
    message count does not, a message holding a batch of a key's events under load)."""
    text = urllib.request.urlopen(f"{proxy_url}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("cg_proxy_usage_events_total{") and any(f'outcome="{o}"' in line for o in ("ok", "outbox")):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


# The harness's chat request (harness/bench.lua), as the proxy receives it.
TYPICAL_CHAT = (
    b'{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a concise assistant."},'
    b'{"role":"user","content":"Write one sentence about load testing an HTTP gateway."}],'
    b'"max_tokens":64,"temperature":0}'
)


def validation_cost_us(number: int = 20_000, repeat: int = 5) -> dict[str, float]:
    """Microseconds a request spends in ``cg_proxy.request_checks.parsed``: the parse,
    the schema check, and both (best of ``repeat`` runs of ``number`` calls)."""
    from cg_proxy import request_checks
    from cglib.openai_requests import parse_body

    validator = request_checks.validator()
    body = parse_body(TYPICAL_CHAT)

    def best(fn) -> float:
        return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6

    return {
        "parse (orjson)": best(lambda: parse_body(TYPICAL_CHAT)),
        "schema check": best(lambda: validator.check("chat", body)),
        "validation, all": best(lambda: request_checks.parsed("chat", TYPICAL_CHAT)),
    }


def print_validation_cost() -> None:
    print(f"\n{'request validation (in-process, typical chat body)':<52} {'µs/req':>7}")
    for step, us in validation_cost_us().items():
        print(f"{step:<52} {us:>7.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--targets",
        default="direct litellm creditgate",
        help="harness targets, in order (direct, litellm, portkey, creditgate)",
    )
    ap.add_argument("--modes", default="json sse slow")
    ap.add_argument("--c1-secs", type=int, default=10)
    ap.add_argument("--c32-secs", type=int, default=15)
    ap.add_argument("--ledger-db", default="", help="ledger DSN (default: SQLite under a temp dir)")
    ap.add_argument(
        "--proxy-workers",
        default="0",
        help="proxy worker counts to measure, in order (0 = one per core, the default of CG_PROXY_WORKERS)",
    )
    ap.add_argument(
        "--no-leases", dest="leases", action="store_false", help="a reservation per request (CG_PROXY_LEASES=0)"
    )
    ap.add_argument("--leases", action="store_true", help="budget leases, the default (kept for older commands)")
    ap.add_argument("--out", default="", help="results directory (default: the harness's)")
    ap.add_argument("--validation-only", action="store_true", help="only measure request validation, in-process")
    args = ap.parse_args()
    if args.validation_only:
        print_validation_cost()
        return 0

    if not (HARNESS / "run.sh").exists():
        print(f"benchmark harness not found at {HARNESS} (set CG_BENCH_HARNESS)", file=sys.stderr)
        return 2
    missing = [t for t in ("wrk", "nginx") if shutil.which(t) is None]
    if missing:
        print(f"missing {', '.join(missing)}: run `make bench-setup` once (as root)", file=sys.stderr)
        return 2

    rc = 0
    for i, workers in enumerate(int(w) for w in args.proxy_workers.split()):
        name = "creditgate" if i == 0 else f"creditgate-w{workers or os.cpu_count()}"
        rc = measure_stack(args, workers, args.targets if i == 0 else name, name) or rc
    print_validation_cost()
    return rc


def measure_stack(args: argparse.Namespace, workers: int, targets: str, name: str) -> int:
    """One stack with ``workers`` proxy workers, measured by the harness as ``name``."""
    var = Path(tempfile.mkdtemp(prefix="cg-bench-"))
    config = StackConfig(
        var_dir=var,
        services=SERVICES,
        ledger_db=args.ledger_db,
        proxy_workers=workers,  # 0: the proxy's default, one per core
        env={
            "proxy": {**UPSTREAMS, "CG_PROXY_LOG_LEVEL": "WARNING", "CG_PROXY_LEASES": "1" if args.leases else "0"},
            "keys": {"CG_KEYS_LOG_LEVEL": "WARNING"},
            "ledger": {"CG_LEDGER_LOG_LEVEL": "WARNING"},
            "worker": {"CG_WORKER_LOG_LEVEL": "WARNING"},
        },
    )
    with Stack(config) as stack:
        seeder = Seeder(stack.keys_addr, stack.ledger_addr)
        try:
            partner = seeder.partner("bench", credits=1_000_000, name="Bench Partner", tier="enterprise")
            key = seeder.funded_key(partner, 500_000, list(MODELS.values()), name="bench")
            before_ucr = seeder.balance_ucr(key.account)
        finally:
            seeder.close()
        pids = {name: stack.procs[name].popen.pid for name in SERVICES}
        time.sleep(1)  # the proxy's workers are up
        cpu0 = {svc: tree_cpu_s(pid) for svc, pid in pids.items()}
        served0 = usage_events(stack.proxy_url)

        modes = [m for m in args.modes.split() if m in MODELS]
        cmd = [
            "bash",
            str(HARNESS / "run.sh"),
            "--target",
            f"{stack.proxy_url}/v1",
            "--key",
            key.secret,
            "--name",
            name,
            "--model",
            MODELS["json"],
            "--stream-model",
            MODELS["sse"],
            "--pid",
            str(pids["proxy"]),
            "--stack-pids",  # the whole stack's CPU per phase (stack_cpu_s/1k)
            " ".join(str(pid) for pid in pids.values()),
            "--targets",
            targets,
            "--modes",
            " ".join(modes),
            "--rounds",
            str(args.rounds),
            "--c1-secs",
            str(args.c1_secs),
            "--c32-secs",
            str(args.c32_secs),
        ]
        if "slow" in modes:
            cmd += ["--slow-model", MODELS["slow"]]
        if args.out:
            cmd += ["--out", args.out]
        print("+", shlex.join(c if c != key.secret else "<key>" for c in cmd), flush=True)
        started, stolen0 = time.monotonic(), stolen_ticks()
        rc = subprocess.call(cmd)
        elapsed, stolen1 = time.monotonic() - started, stolen_ticks()

        time.sleep(3)  # settlements and events still in flight
        served = usage_events(stack.proxy_url) - served0
        cpu = {svc: sum(s - cpu0[svc].get(p, 0.0) for p, s in tree_cpu_s(pid).items()) for svc, pid in pids.items()}
        peak_kb = {svc: tree_peak_rss_kb(pid) for svc, pid in pids.items()}
        seeder = Seeder(stack.keys_addr, stack.ledger_addr)
        try:
            spent_ucr = before_ucr - seeder.balance_ucr(key.account)
        finally:
            seeder.close()

    n = workers or os.cpu_count()
    print(
        f"\n{name}: the stack with {n} proxy worker(s) during the run ({elapsed:.0f} s): "
        f"{served} requests answered and metered (usage events)"
    )
    steal, total = stolen1[0] - stolen0[0], stolen1[1] - stolen0[1]
    print(f"the host took {100 * steal / max(total, 1):.1f}% of this machine's CPU time for others meanwhile (steal)")
    if served:
        print(f"{'service':<8} {'cpu_s':>8} {'cpu_ms/req':>11} {'peak_rss_mb':>12}")
        for svc in SERVICES:
            print(f"{svc:<8} {cpu[svc]:>8.1f} {cpu[svc] * 1000 / served:>11.3f} {peak_kb[svc] / 1024:>12.0f}")
        total = sum(cpu.values())
        print(f"{'all':<8} {total:>8.1f} {total * 1000 / served:>11.3f} {sum(peak_kb.values()) / 1024:>12.0f}")
        print(
            f"the key was charged {spent_ucr:,} µcr for them ({spent_ucr / served:,.1f} µcr a request; "
            f"20+30 tokens cost 2,100 µcr on gpt-4o-mini, 1,820 on deepseek-chat, 1,100 on mistral-small)"
        )
    shutil.rmtree(var, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())

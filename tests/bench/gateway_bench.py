#!/usr/bin/env python
"""Gateway overhead: Creditgate's proxy beside a direct call and LiteLLM, in one run.

Starts the whole stack (NATS with JetStream, keys, ledger, proxy, worker — metering,
settlement and usage events all on, SQLite by default) with its providers pointed at the
fake nginx upstream of the benchmark harness beside this script (``harness/``, or
``CG_BENCH_HARNESS``; ``json``: gpt-4o-mini → :18001/v1, ``sse``: deepseek-chat →
:18001/sse/v1, ``slow``: mistral-small-latest → :18002/v1), funds one key, then runs that
harness's ``run.sh`` with the proxy as a target next to ``direct`` and the peers. The
harness prints its table (medians over rounds; ``d_p50_ms`` at c=1 is the added latency,
``rps_ratio`` at c=32 the throughput beside direct, ``cpu_s/1k`` the proxy process's CPU
per 1,000 requests). This script adds the CPU of every stack service per 1,000 proxied
requests, checks the ledger charged what the proxy served, and measures in-process what
validating a request body costs (parse + OpenAI's schema, the proxy's
``cg_proxy.request_checks``, on a typical chat body).

    make bench                                  # needs `make bench-setup` once (root)
    make bench BENCH_ARGS="--rounds 1 --targets 'direct creditgate'"
    make bench BENCH_ARGS=--validation-only     # only the validation cost, no stack

Not a test: pytest does not collect it (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import os
import re
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


def proxied_requests(proxy_url: str) -> int:
    """2xx answers of the metered routes, from the proxy's own metrics."""
    text = urllib.request.urlopen(f"{proxy_url}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("cg_proxy_requests_total{")
            and 'path="/v1/chat/completions"' in line
            and re.search(r'status="2\d\d"', line)
        ):
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

    var = Path(tempfile.mkdtemp(prefix="cg-bench-"))
    config = StackConfig(
        var_dir=var,
        services=SERVICES,
        ledger_db=args.ledger_db,
        env={
            "proxy": {**UPSTREAMS, "CG_PROXY_LOG_LEVEL": "WARNING"},
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
        cpu0 = {name: proc_cpu_s(pid) for name, pid in pids.items()}
        served0 = proxied_requests(stack.proxy_url)

        modes = [m for m in args.modes.split() if m in MODELS]
        cmd = [
            "bash",
            str(HARNESS / "run.sh"),
            "--target",
            f"{stack.proxy_url}/v1",
            "--key",
            key.secret,
            "--name",
            "creditgate",
            "--model",
            MODELS["json"],
            "--stream-model",
            MODELS["sse"],
            "--pid",
            str(pids["proxy"]),
            "--targets",
            args.targets,
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
        started = time.monotonic()
        rc = subprocess.call(cmd)
        elapsed = time.monotonic() - started

        time.sleep(3)  # settlements and events still in flight
        served = proxied_requests(stack.proxy_url) - served0
        cpu = {name: proc_cpu_s(pid) - cpu0[name] for name, pid in pids.items()}
        seeder = Seeder(stack.keys_addr, stack.ledger_addr)
        try:
            spent_ucr = before_ucr - seeder.balance_ucr(key.account)
        finally:
            seeder.close()

    print(f"\nCreditgate stack during the run ({elapsed:.0f} s): {served} requests answered 2xx by the proxy")
    if served:
        print(f"{'service':<8} {'cpu_s':>8} {'cpu_ms/req':>11}")
        for name in SERVICES:
            print(f"{name:<8} {cpu[name]:>8.1f} {cpu[name] * 1000 / served:>11.3f}")
        total = sum(cpu.values())
        print(f"{'all':<8} {total:>8.1f} {total * 1000 / served:>11.3f}")
        print(
            f"the key was charged {spent_ucr:,} µcr for them ({spent_ucr / served:,.1f} µcr a request; "
            f"20+30 tokens cost 2,100 µcr on gpt-4o-mini, 1,820 on deepseek-chat, 1,100 on mistral-small)"
        )
    print_validation_cost()
    shutil.rmtree(var, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())

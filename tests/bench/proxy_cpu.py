#!/usr/bin/env python
"""The proxy's CPU per request, and (``--profile``) where it goes.

Starts NATS, keys, ledger and the mock upstream as the tests do (``cg_devstack``, SQLite,
free ports), then the proxy (``--profile``: under ``cProfile``), funds one key and drives
JSON and SSE chat completions at it with ``wrk`` (the harness's ``bench.lua``). For each
mode it prints the proxy process's CPU (user + system, every thread, read from /proc,
the settlements and usage events of the requests included) per request answered 2xx.
With ``--profile`` it stops the proxy gracefully afterwards and prints the profile's top
functions (the event loop's thread only: gRPC's and the outbox's threads are not in it).

    .venv/bin/python tests/bench/proxy_cpu.py                       # CPU ms/request
    .venv/bin/python tests/bench/proxy_cpu.py --profile --top 40    # and the profile

Not a test: pytest does not collect it (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cg_devstack import Stack, StackConfig
from cg_devstack.seed import Seeder

HERE = Path(__file__).resolve().parent
LUA = HERE / "harness" / "bench.lua"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ``python -m cProfile`` writes nothing: uvicorn re-raises SIGTERM once it has shut down,
# which kills the process before the profile is saved. Here that SIGTERM is an exception.
_PROFILED = """
import cProfile, runpy, signal, sys
def stop(*_):
    raise SystemExit(0)
signal.signal(signal.SIGTERM, stop)
profile = cProfile.Profile()
try:
    profile.runcall(runpy.run_module, "cg_proxy", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    profile.dump_stats({out!r})
"""


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def tree_cpu_s(pid: int) -> float:
    """The CPU of ``pid`` and its children (the proxy's worker processes, if any)."""
    total = cpu_s(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else ():
        total += tree_cpu_s(int(child))
    return total


def wrk(url: str, key: str, stream: bool, seconds: int, conns: int) -> int:
    env = {**os.environ, "BENCH_MODEL": "gpt-4o-mini", "BENCH_KEY": key, "BENCH_STREAM": "1" if stream else "0"}
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{int(seconds)}s", "-s", str(LUA), f"{url}/v1/chat/completions"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"RESULT requests=(\d+) .* non2xx=(\d+)", out)
    assert m, out
    if int(m.group(2)):
        raise SystemExit(f"non-2xx answers: {out}")
    return int(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", action="store_true", help="run the proxy under cProfile and print its top")
    ap.add_argument("--seconds", type=int, default=8, help="wrk's duration per mode")
    ap.add_argument("--conns", type=int, default=4, help="wrk's connections")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--workers", type=int, default=1, help="CG_PROXY_WORKERS")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cg-proxy-cpu-") as tmp:
        var = Path(tmp)
        prof = var / "proxy.prof"
        stack = Stack(StackConfig(var_dir=var, services=("nats", "keys", "ledger", "mock")))
        with stack:
            proc = stack._build("proxy")
            proc.env = {**proc.env, "CG_PROXY_WORKERS": str(args.workers)}
            if args.profile:
                proc.argv = [sys.executable, "-c", _PROFILED.format(out=str(prof))]
            stack.procs["proxy"] = proc
            proc.start()
            proc.wait_ready(60)
            assert proc.popen is not None
            pid = proc.popen.pid
            seeder = Seeder(stack.keys_addr, stack.ledger_addr)
            key = seeder.funded_key(seeder.partner("cpu", credits=1_000_000), 500_000, ["gpt-4o-mini"])
            seeder.close()
            wrk(stack.proxy_url, key.secret, False, 2, args.conns)  # warm-up
            time.sleep(1)
            for mode in ("json", "sse"):
                before = tree_cpu_s(pid)
                n = wrk(stack.proxy_url, key.secret, mode == "sse", args.seconds, args.conns)
                time.sleep(1.5)  # the last settlements and events
                used = tree_cpu_s(pid) - before
                print(f"{mode:5} {n:7d} requests  proxy CPU {used:7.2f} s  {1000 * used / n:6.3f} ms/request")
            proc.stop()
        if args.profile:
            stats = pstats.Stats(str(prof))
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``make run``: the whole stack on its embedded default, a demo key, the demo users who
sign in to the portal, and how to use them."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from cg_devstack.certs import mtls_from_env
from cg_devstack.seed import DemoUsers, Seeder, ensure_demo, ensure_demo_users
from cg_devstack.stack import Stack, StackConfig


def banner(stack: Stack, key, users: DemoUsers, command: str = "make run") -> str:
    base = f"{stack.proxy_url}/v1"
    env = "" if stack.var == Path("var").resolve() else f"CG_DEVSTACK_VAR={stack.var} "
    models = ", ".join(key.models)
    admin = stack.bff_admin
    mtls = f"\ninternal gRPC:   mutual TLS, certificates in {stack.certs_dir}" if stack.certs_dir else ""
    return f"""
================================ Creditgate is running ================================
export OPENAI_BASE_URL={base}
export OPENAI_API_KEY={key.secret}

demo key models: {models}
portal:          {stack.bff_url}/   (management API: {stack.bff_url}/api/v1/docs)
  sign in as     email / password
  partner owner  {users.partner_email} / {users.partner_password}
  customer user  {users.customer_email} / {users.customer_password}
  platform admin {admin["email"]} / {admin["password"]}
metrics:         {stack.proxy_url}/metrics
logs:            {stack.var / "logs"}{mtls}
balance:         {env}.venv/bin/python -m cg_devstack.balance

curl -s {base}/chat/completions -H "Authorization: Bearer {key.secret}" -H "Content-Type: application/json" -d '{{"model": "{key.models[0]}", "messages": [{{"role": "user", "content": "Hello"}}]}}'

Ctrl-C stops everything; `{command}` again reuses {stack.var} (the same demo key, users and passwords keep working).
========================================================================================
"""


def main() -> int:
    var = Path(os.environ.get("CG_DEVSTACK_VAR", "var"))
    offset = int(os.environ.get("CG_DEVSTACK_PORT_OFFSET", "0"))
    # the proxy with one worker process per core, its own default
    config = StackConfig(
        var_dir=var, fixed_ports=True, port_offset=offset, echo=sys.stdout, proxy_workers=0, mtls=mtls_from_env()
    )
    stack = Stack(config)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stack.start()
        seeder = Seeder(stack.keys_addr, stack.ledger_addr, stack.certs_dir)
        try:
            key = ensure_demo(seeder, stack.var)
            users = ensure_demo_users(seeder, stack.var, stack.bff_url, stack.bff_admin, key.partner_id)
        finally:
            seeder.close()
        print(banner(stack, key, users), flush=True)
        while not stop.is_set():
            for name, proc in stack.procs.items():
                if not proc.running:
                    print(f"{name} exited unexpectedly; stopping the stack", file=sys.stderr)
                    stop.set()
            stop.wait(1)
    finally:
        print("stopping...", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m cg_devstack.balance``: the demo key's ledger balance, in credits and µcr,
from the stack that ``make run`` (or ``make run-cluster``) started (reads ``demo-key.json``
in ``CG_DEVSTACK_VAR``, ``var`` by default)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from cg_devstack.certs import certs_dir_from_env
from cg_devstack.seed import Seeder
from cg_devstack.stack import DEFAULT_PORTS
from cglib.money import UCR_PER_CREDIT


def main() -> int:
    state = Path(os.environ.get("CG_DEVSTACK_VAR", "var")) / "demo-key.json"
    if not state.exists():
        print("no demo key yet: run `make run` first", file=sys.stderr)
        return 1
    key = json.loads(state.read_text())
    offset = int(os.environ.get("CG_DEVSTACK_PORT_OFFSET", "0"))
    seeder = Seeder(
        f"127.0.0.1:{DEFAULT_PORTS['keys'] + offset}",
        f"127.0.0.1:{DEFAULT_PORTS['ledger'] + offset}",
        certs_dir_from_env(Path(os.environ.get("CG_DEVSTACK_VAR", "var"))),
    )
    try:
        b = seeder.balance(key["account"])
    finally:
        seeder.close()
    for label, ucr in (("posted", b.posted_ucr), ("pending", b.pending_ucr), ("available", b.available_ucr)):
        print(f"{label:>9}: {ucr / UCR_PER_CREDIT:,.6f} credits  ({ucr:,} µcr)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

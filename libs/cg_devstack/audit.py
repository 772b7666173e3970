"""``python -m cg_devstack.audit``: the ledger's audit of the stack ``make run`` started
(reads the admin token from ``var/``); exits 1 when the books have a discrepancy."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cg_devstack.certs import certs_dir_from_env, sync_channel
from cg_devstack.stack import DEFAULT_PORTS
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc


def main() -> int:
    var = Path(os.environ.get("CG_DEVSTACK_VAR", "var"))
    token_file = var / "ledger-admin-token"
    if not token_file.exists():
        print("no ledger admin token yet: run `make run` first", file=sys.stderr)
        return 2
    port = DEFAULT_PORTS["ledger"] + int(os.environ.get("CG_DEVSTACK_PORT_OFFSET", "0"))
    with sync_channel(f"127.0.0.1:{port}", certs_dir_from_env(var), "bff") as channel:
        audit = ledger_pb2_grpc.LedgerAdminServiceStub(channel).AuditBooks(
            ledger_pb2.AuditBooksRequest(), metadata=(("x-cg-admin-token", token_file.read_text().strip()),), timeout=30
        )
    print(f"{audit.accounts} accounts, {audit.transfers} transfers")
    for unit in audit.units:
        print(
            f"  {unit.unit:>10}: {unit.accounts} accounts, posted balances sum to {unit.sum_posted}, "
            f"{unit.external_in} came in from outside"
        )
    for d in audit.discrepancies:
        print(f"  DISCREPANCY {d.check} {d.account or '(whole unit)'}: {d.detail}")
    print("books: ok" if audit.ok else "books: NOT ok")
    return 0 if audit.ok else 1


if __name__ == "__main__":
    sys.exit(main())

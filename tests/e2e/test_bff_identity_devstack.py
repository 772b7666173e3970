"""``make run`` seeds the demo partner's owner and a demo customer's user and prints how
they sign in; a second run on the same var/ prints the same users, whose passwords still
work, and makes no second one."""

from __future__ import annotations

import re
import signal

from cg_devstack.bff import BffClient
from cg_devstack.seed import Seeder
from cg_devstack.stack import DEFAULT_PORTS
from creditgate.keys.v1 import keys_pb2
from e2e.test_devstack import Run, free_offset

SIGN_IN = re.compile(r"^\s+(partner owner|customer user|platform admin)\s+(\S+) / (\S+)\s*$", re.MULTILINE)


def printed(run: Run) -> dict[str, tuple[str, str]]:
    found = {who: (email, password) for who, email, password in SIGN_IN.findall(run.log.read_text(errors="replace"))}
    assert set(found) == {"partner owner", "customer user", "platform admin"}, run.log.read_text()[-3000:]
    return found


def stop(run: Run) -> None:
    try:
        run.proc.send_signal(signal.SIGINT)
        run.proc.wait(60)
    finally:
        run.close()


def test_make_run_prints_demo_users_who_sign_in_and_keeps_them(tmp_path) -> None:
    offset = free_offset()
    bff_url = f"http://127.0.0.1:{DEFAULT_PORTS['bff'] + offset}"
    first = Run(tmp_path, offset)
    try:
        first.wait_banner()
        users = printed(first)
        with BffClient(bff_url).sign_in(*users["partner owner"]) as owner:
            assert owner.user["kind"] == "partner" and owner.user["role"] == "owner"
            partner_id = owner.user["partner_id"]
        with BffClient(bff_url).sign_in(*users["customer user"]) as customer:
            assert customer.user["kind"] == "customer" and customer.user["partner_id"] == partner_id
            customer_id = customer.user["customer_id"]
        seeder = Seeder(f"127.0.0.1:{DEFAULT_PORTS['keys'] + offset}", f"127.0.0.1:{DEFAULT_PORTS['ledger'] + offset}")
        try:  # the demo customer sees AI Gateway: self-service, AI credits and the menu all on
            shown = seeder.keys.GetCustomer(
                keys_pb2.GetCustomerRequest(actor=keys_pb2.Actor(partner_id=partner_id), customer_id=customer_id),
                timeout=5,
            )
            assert shown.ai_gateway_visible, shown
        finally:
            seeder.close()
    finally:
        stop(first)

    second = Run(tmp_path, offset)  # the same var/
    try:
        second.wait_banner()
        assert printed(second) == users
        with BffClient(bff_url).sign_in(*users["platform admin"]) as admin:
            team = admin.ok("GET", f"/admin/partners/{partner_id}/users")["data"]
            assert [u["email"] for u in team] == [users["partner owner"][0]]
        with BffClient(bff_url).sign_in(*users["customer user"]) as customer:
            assert customer.user["customer_id"] == customer_id
    finally:
        stop(second)

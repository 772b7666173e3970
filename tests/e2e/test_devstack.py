"""``make run`` (``python -m cg_devstack``) as a user runs it: killed outright, its
services die with it; started again at once, it finds its ports free. It seeds the demo
partner's owner and a demo customer's user (who sees AI Gateway) and prints how they sign
in; a second run on the same var/ prints the same users, whose passwords still work, and
makes no second one."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cg_devstack.bff import BffClient
from cg_devstack.procs import port_is_free
from cg_devstack.seed import Seeder
from cg_devstack.stack import DEFAULT_PORTS
from creditgate.keys.v1 import keys_pb2

BANNER = "Creditgate is running"
SIGN_IN = re.compile(r"^\s+(partner owner|customer user|platform admin)\s+(\S+) / (\S+)\s*$", re.MULTILINE)


def free_offset() -> int:
    """An offset that puts every default port of the stack on a free port."""
    for offset in range(1_000, 65_535 - max(DEFAULT_PORTS.values()), 137):
        if all(port_is_free(port + offset) for port in DEFAULT_PORTS.values()):
            return offset
    raise AssertionError("no free port range")


def children_of(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Run:
    """One ``python -m cg_devstack`` in its own process group, as a terminal starts it."""

    def __init__(self, workdir: Path, offset: int) -> None:
        env = {**os.environ, "CG_DEVSTACK_PORT_OFFSET": str(offset), "PYTHONUNBUFFERED": "1"}
        self.log = workdir / f"run-{time.monotonic_ns()}.log"
        self.out = open(self.log, "wb")  # noqa: SIM115 (the child writes to it until close())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cg_devstack"],
            cwd=workdir,
            env=env,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_banner(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while BANNER not in self.log.read_text(errors="replace"):
            assert self.proc.poll() is None, f"make run exited:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no banner:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.out.close()


def printed_users(run: Run) -> dict[str, tuple[str, str]]:
    """The demo sign-ins the banner prints: who -> (email, password)."""
    text = run.log.read_text(errors="replace")
    found = {who: (email, password) for who, email, password in SIGN_IN.findall(text)}
    assert set(found) == {"partner owner", "customer user", "platform admin"}, text[-3000:]
    return found


def check_demo_users(offset: int, users: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """The demo owner and customer user sign in; the customer sees AI Gateway (self-service,
    AI credits and its menu all on). Answers (partner id, customer id)."""
    bff_url = f"http://127.0.0.1:{DEFAULT_PORTS['bff'] + offset}"
    with BffClient(bff_url).sign_in(*users["partner owner"]) as owner:
        assert owner.user["kind"] == "partner" and owner.user["role"] == "owner"
        partner_id = owner.user["partner_id"]
    with BffClient(bff_url).sign_in(*users["customer user"]) as customer:
        assert customer.user["kind"] == "customer" and customer.user["partner_id"] == partner_id
        customer_id = customer.user["customer_id"]
    seeder = Seeder(f"127.0.0.1:{DEFAULT_PORTS['keys'] + offset}", f"127.0.0.1:{DEFAULT_PORTS['ledger'] + offset}")
    try:
        actor = keys_pb2.Actor(partner_id=partner_id)
        shown = seeder.keys.GetCustomer(keys_pb2.GetCustomerRequest(actor=actor, customer_id=customer_id), timeout=5)
        assert shown.ai_gateway_visible, shown
    finally:
        seeder.close()
    return partner_id, customer_id


def check_same_demo_users(offset: int, users: dict[str, tuple[str, str]], partner_id: str, customer_id: str) -> None:
    """A second run kept them: one owner, the same customer user."""
    bff_url = f"http://127.0.0.1:{DEFAULT_PORTS['bff'] + offset}"
    with BffClient(bff_url).sign_in(*users["platform admin"]) as admin:
        team = admin.ok("GET", f"/admin/partners/{partner_id}/users")["data"]
        assert [u["email"] for u in team] == [users["partner owner"][0]]
    with BffClient(bff_url).sign_in(*users["customer user"]) as customer:
        assert customer.user["customer_id"] == customer_id


@pytest.fixture
def workdir(tmp_path):
    yield tmp_path


def test_killed_outright_its_services_die_and_a_new_run_starts_at_once(workdir):
    offset = free_offset()
    first = Run(workdir, offset)
    try:
        first.wait_banner()
        users = printed_users(first)
        partner_id, customer_id = check_demo_users(offset, users)
        services = children_of(first.proc.pid)
        assert len(services) >= 7, services  # nats, keys, ledger, mock, proxy, worker, bff
        first.proc.kill()  # SIGKILL: no chance to stop anything itself
        first.proc.wait()
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in services) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in services if alive(pid)], "services outlived make run"
    finally:
        first.close()

    second = Run(workdir, offset)  # at once: the killed run's ports must be usable again
    try:
        second.wait_banner()
        assert printed_users(second) == users
        check_same_demo_users(offset, users, partner_id, customer_id)
        env = {**os.environ, "CG_DEVSTACK_PORT_OFFSET": str(offset)}
        for tool in ("cg_devstack.audit", "cg_devstack.balance"):  # the helpers the README names
            done = subprocess.run(
                [sys.executable, "-m", tool], cwd=workdir, env=env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stdout + done.stderr
        assert (
            "books: ok"
            in subprocess.run(
                [sys.executable, "-m", "cg_devstack.audit"],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        )
        second.proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop ...
        assert second.proc.wait(60) == 0
    finally:
        second.close()

    third = Run(workdir, offset)  # ... and again right after it
    try:
        third.wait_banner()
    finally:
        third.proc.send_signal(signal.SIGINT)
        third.proc.wait(60)
        third.close()

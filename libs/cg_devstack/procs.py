"""One supervised child process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ReadyCheck = Callable[[], bool]


# Ports free_port has handed out in this process: the kernel may hand the same free port to
# two bind(0) calls in a row (nothing listens on it yet), and a stack asks for a dozen at once.
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, not one this process was given lately."""
    if len(_handed_out) > 10_000:  # most of the ephemeral range: start over
        _handed_out.clear()
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now. SO_REUSEADDR as every server of the
    stack sets it: connections of a stopped server lingering in TIME_WAIT don't count."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for_free_ports(ports: dict[str, int], timeout_s: float) -> list[str]:
    """Waits up to ``timeout_s`` for the ports to be free (a stack stopped a moment ago
    may still be letting go of them); returns the ``name:port`` of those still taken."""
    deadline = time.monotonic() + timeout_s
    while True:
        busy = [f"{name}:{port}" for name, port in ports.items() if not port_is_free(port)]
        if not busy or time.monotonic() >= deadline:
            return busy
        time.sleep(0.1)


def http_ok(url: str) -> ReadyCheck:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return resp.status == 200
        except Exception:
            return False

    return check


def nats_ready(client_port: int, monitor_port: int) -> ReadyCheck:
    """Our nats-server is ready when JetStream is up and the server answering on the
    client port is the one behind our monitor port (same ``server_id``): a free port
    taken by another process in between must not pass for ours."""
    import json

    healthz = http_ok(f"http://127.0.0.1:{monitor_port}/healthz?js-enabled-only=true")

    def check() -> bool:
        if not healthz():
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/varz", timeout=1) as resp:
                ours = json.load(resp)["server_id"]
            with socket.create_connection(("127.0.0.1", client_port), timeout=1) as sock:
                info = sock.makefile("rb").readline()  # the server greets with INFO {...}
            return info.startswith(b"INFO ") and json.loads(info[5:])["server_id"] == ours
        except (OSError, ValueError, KeyError):
            return False

    return check


def grpc_serving(addr: str) -> ReadyCheck:
    def check() -> bool:
        try:
            with grpc.insecure_channel(addr) as ch:
                resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                return resp.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    return check


def _listening_inodes(port: int) -> set[str] | None:
    """Inodes of the TCP sockets listening on ``port`` (IPv4 and IPv6); None without
    ``/proc/net`` (not Linux)."""
    found: set[str] = set()
    read_any = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        read_any = True
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                found.add(fields[9])
    return found if read_any else None


def _tree_socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets that ``pid`` and its descendants hold."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, todo = set(), [pid]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo.extend(child for child, parent in parents.items() if parent == p and child not in tree)
    inodes: set[str] = set()
    for p in tree:
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{p}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    return inodes


class Proc:
    """A child process whose output goes to ``log_path`` (and, if ``echo`` is given,
    to that stream too, each line prefixed with the process name).

    ``listens_on``: ports the process binds itself. It is ready only once it listens on
    them: a ready check answered by another process, which took a port we picked before
    this one bound it, does not count (the process then dies of "address already in use",
    and ``start_on_free_ports`` starts it again on other ports)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        ready: ReadyCheck,
        cwd: Path | None = None,
        echo: TextIO | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.ready = ready
        self.cwd = cwd
        self.echo = echo
        self.popen: subprocess.Popen | None = None
        self._pump: threading.Thread | None = None
        self.listens_on: tuple[int, ...] = ()

    @classmethod
    def python_module(
        cls, name: str, module: str, env: dict[str, str], log_path: Path, ready: ReadyCheck, **kw
    ) -> Proc:
        return cls(name, [sys.executable, "-m", module], env, log_path, ready, **kw)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        # the child becomes argv once it is set to die with us (cg_devstack.child says why)
        argv = [sys.executable, "-m", "cg_devstack.child", str(os.getpid()), "--", *self.argv]
        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal reaches the supervisor only
        )
        self._pump = threading.Thread(target=self._copy_output, name=f"log-{self.name}", daemon=True)
        self._pump.start()

    def _copy_output(self) -> None:
        assert self.popen is not None and self.popen.stdout is not None
        with open(self.log_path, "ab", buffering=0) as log:
            for line in self.popen.stdout:
                log.write(line)
                if self.echo is not None:
                    self.echo.write(f"{self.name:>8} | {line.decode(errors='replace')}")
                    self.echo.flush()

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode if self.popen else '?'}:\n{self.tail()}"
                )
            if self.ready() and self.holds_its_ports():
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready after {timeout_s}s:\n{self.tail()}")

    def holds_its_ports(self) -> bool:
        """Whether this process (or a child of it) listens on each of ``listens_on``."""
        if not self.listens_on or self.popen is None:
            return True
        mine: set[str] | None = None
        for port in self.listens_on:
            listening = _listening_inodes(port)
            if listening is None:  # no /proc: the ready check alone decides
                return True
            if mine is None:
                mine = _tree_socket_inodes(self.popen.pid)
            if not listening & mine:
                return False
        return True

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout_s: float = 15) -> int | None:
        """SIGTERM, wait for a graceful exit, SIGKILL if it does not come."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self._pump is not None:
            self._pump.join(timeout=5)
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def lost_port(proc: Proc) -> bool:
    """Whether the process died because a port it was given was already taken (a free
    port picked by us can be bound by someone else before the process binds it)."""
    text = proc.log_text().lower()
    return "address already in use" in text or "errno 98" in text


def start_on_free_ports(build: Callable[[], Proc], timeout_s: float = 60, attempts: int = 3) -> Proc:
    """Starts ``build()`` (which picks fresh free ports each call) and waits until it is
    ready; when it lost a port before binding it, builds and starts it again."""
    for attempt in range(attempts):
        proc = build()
        proc.start()
        try:
            proc.wait_ready(timeout_s)
            return proc
        except RuntimeError:
            if attempt == attempts - 1 or not lost_port(proc):
                raise
    raise AssertionError("unreachable")

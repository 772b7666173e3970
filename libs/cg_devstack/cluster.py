"""Many replicas of every service on this machine, behind a real load balancer: what
``make run-cluster`` starts and ``tests/e2e/test_cluster_faults.py`` kills parts of.

- a 3-node NATS JetStream cluster (routes on loopback; every stream kept in 3 copies,
  ``CG_NATS_STREAM_REPLICAS=3``); every client is given all three nodes' URLs;
- keys, ledger, proxy, worker and bff replicas (2, 2, 3, 2, 2 by default) on one
  PostgreSQL (its three databases are given: ``ClusterConfig.databases``), plus the mock
  provider;
- haproxy (Debian's) in front: HTTP to the proxies and the bffs (health-checked on
  ``/readyz`` and ``/healthz``), TCP to keys, ledger and the bffs' internal gRPC port
  (gRPC over h2c: a client's connection sticks to one replica until it breaks, then it
  reconnects to a live one). Every service reaches keys, ledger and the bff through it.

A ``Cluster`` is a ``Stack`` whose addresses (``keys_addr``, ``proxy_url``, ...) are the
load balancer's, so the stack's own builders give every replica the same settings;
``kill`` (SIGKILL) and ``restart`` (same ports, same files) act on one process by name.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from cg_devstack.procs import Proc, ReadyCheck, free_port, nats_ready, wait_for_free_ports
from cg_devstack.stack import DEFAULT_PORTS, PORT_WAIT_S, Replica, Stack, StackConfig, nats_server_binary

NATS_NODES = 3
# What `make run-cluster` binds: the load balancer's front ends where `make run` has its
# services (so the same URLs and the same tools work), three NATS nodes from 4222 up.
LB_FRONTENDS = ("proxy", "bff", "keys", "ledger", "bff_grpc")
NATS_CLIENT_PORT, NATS_MONITOR_PORT, NATS_ROUTE_PORT = 4222, 8222, 6222
# haproxy checks each backend this often (a check may take up to CHECK_TIMEOUT_S on a busy
# machine); two failed checks take it out, one passing puts it back. Meanwhile a connection
# refused by a dead replica is made again to another (``retries`` + ``redispatch``).
CHECK_INTERVAL_MS = 500
CHECK_TIMEOUT_S = 3


@dataclass
class ClusterConfig:
    var_dir: Path
    # PostgreSQL DSNs of the keys, ledger and bff databases (each shared by its replicas)
    databases: dict[str, str]
    replicas: dict[str, int] = field(
        default_factory=lambda: {"keys": 2, "ledger": 2, "proxy": 3, "worker": 2, "bff": 2}
    )
    # Budget leases (CG_PROXY_LEASES) per proxy replica, in order; replicas past the end
    # reserve per request. The default runs both paths side by side, as a fleet would while
    # leases are rolled out: proxy-1 reserves per request, proxy-2 and proxy-3 lease.
    proxy_leases: tuple[bool, ...] = (False, True, True)
    fixed_ports: bool = False
    port_offset: int = 0
    echo: TextIO | None = None
    # Extra environment per service name, for every replica of it.
    env: dict[str, dict[str, str]] = field(default_factory=dict)


def haproxy_binary() -> str:
    path = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(path).exists():
        raise FileNotFoundError("haproxy not found: apt-get install haproxy (make system-deps does)")
    return path


def tcp_open(port: int) -> ReadyCheck:
    def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    return check


def nats_cluster_ready(monitor_port: int) -> ReadyCheck:
    """The node serves JetStream and knows the cluster's meta leader (``/healthz`` 200)."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/healthz", timeout=1) as resp:
                return resp.status == 200 and json.load(resp).get("status") == "ok"
        except Exception:
            return False

    return check


@dataclass
class NatsNode:
    name: str
    client_port: int
    monitor_port: int
    route_port: int

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"


def nats_config(node: NatsNode, nodes: list[NatsNode], store: Path) -> str:
    routes = ", ".join(f'"nats-route://127.0.0.1:{n.route_port}"' for n in nodes)
    return f"""server_name: "{node.name}"
listen: "127.0.0.1:{node.client_port}"
http: "127.0.0.1:{node.monitor_port}"
jetstream {{
  store_dir: "{store}"
  max_memory_store: 64MB
  max_file_store: 1GB
}}
cluster {{
  name: "creditgate"
  listen: "127.0.0.1:{node.route_port}"
  routes: [{routes}]
}}
"""


def haproxy_config(frontends: dict[str, int], backends: dict[str, list[Replica]]) -> str:
    """HTTP in front of the proxies and bffs, TCP (gRPC over h2c) in front of keys, ledger
    and the bffs' internal gRPC port. A request is sent again elsewhere only when its
    connection could not be made (``retries`` + ``redispatch``): never once it reached a
    replica, which may have answered (and billed) it."""

    def servers(name: str, port_index: int = 0) -> str:
        return "\n".join(f"    server {r.proc.name} 127.0.0.1:{r.ports[port_index]} check" for r in backends[name])

    check = f"default-server inter {CHECK_INTERVAL_MS} fall 2 rise 1"
    return f"""global
    nbthread 1
    maxconn 4096

defaults
    timeout connect 1s
    timeout check {CHECK_TIMEOUT_S}s
    timeout client 10m
    timeout server 10m
    timeout tunnel 1h
    retries 3
    option redispatch

frontend proxy
    mode http
    bind 127.0.0.1:{frontends["proxy"]}
    default_backend proxies

backend proxies
    mode http
    balance roundrobin
    option httpchk GET /readyz
    {check}
{servers("proxy")}

frontend bff
    mode http
    bind 127.0.0.1:{frontends["bff"]}
    default_backend bffs

backend bffs
    mode http
    balance roundrobin
    option httpchk GET /healthz
    {check}
{servers("bff")}

listen keys
    mode tcp
    bind 127.0.0.1:{frontends["keys"]}
    balance leastconn
    {check}
{servers("keys")}

listen ledger
    mode tcp
    bind 127.0.0.1:{frontends["ledger"]}
    balance leastconn
    {check}
{servers("ledger")}

listen bff_grpc
    mode tcp
    bind 127.0.0.1:{frontends["bff_grpc"]}
    balance leastconn
    {check}
{servers("bff", 1)}
"""


class Cluster(Stack):
    """The cluster; ``start()`` / ``stop()`` (or ``with``), ``kill(name)`` / ``restart(name)``."""

    def __init__(self, config: ClusterConfig) -> None:
        stack_config = StackConfig(
            var_dir=config.var_dir,
            keys_db=config.databases["keys"],
            ledger_db=config.databases["ledger"],
            bff_db=config.databases["bff"],
            echo=config.echo,
            env=config.env,
            proxy_workers=1,  # one process per proxy replica: three of them share two cores here
        )
        super().__init__(stack_config)
        self.cluster = config
        off = config.port_offset
        # the stack's builders read every port name; the replicas' own ports replace these zeros
        self.ports = dict.fromkeys(DEFAULT_PORTS, 0)
        if config.fixed_ports:
            self.ports |= {name: DEFAULT_PORTS[name] + off for name in (*LB_FRONTENDS, "mock")}
            self.nats_nodes = [
                NatsNode(
                    f"nats-{i + 1}", NATS_CLIENT_PORT + off + i, NATS_MONITOR_PORT + off + i, NATS_ROUTE_PORT + off + i
                )
                for i in range(NATS_NODES)
            ]
            wanted = {
                **{name: port for name, port in self.ports.items() if port},
                **{
                    f"{n.name}:{kind}": p
                    for n in self.nats_nodes
                    for kind, p in (("client", n.client_port), ("monitor", n.monitor_port), ("route", n.route_port))
                },
            }
            busy = wait_for_free_ports(wanted, PORT_WAIT_S)
            if busy:
                raise RuntimeError(f"ports already in use: {', '.join(busy)} (is a stack running?)")
        else:
            self.ports |= {name: free_port() for name in (*LB_FRONTENDS, "mock")}
            self.nats_nodes = [
                NatsNode(f"nats-{i + 1}", free_port(), free_port(), free_port()) for i in range(NATS_NODES)
            ]
        self.replicas: dict[str, Replica] = {}

    # -- addresses ----------------------------------------------------------------

    @property
    def nats_url(self) -> str:
        return ",".join(node.url for node in self.nats_nodes)

    def replica_names(self, service: str) -> list[str]:
        return [name for name, r in self.replicas.items() if r.service == service]

    def url_of(self, name: str) -> str:
        """A replica's own base URL (a proxy's or bff's HTTP port), past the load balancer."""
        return self.replicas[name].url

    # -- processes ----------------------------------------------------------------

    def _nats_proc(self, node: NatsNode) -> Proc:
        store = self.var / "nats" / node.name
        store.mkdir(parents=True, exist_ok=True)
        conf = self.var / f"{node.name}.conf"
        conf.write_text(nats_config(node, self.nats_nodes, store))
        argv = [nats_server_binary(), "-c", str(conf)]
        return Proc(
            node.name,
            argv,
            {},
            self.var / "logs" / f"{node.name}.log",
            nats_ready(node.client_port, node.monitor_port),
            echo=self.config.echo,
        )

    def _replicas(self) -> None:
        shared = {"CG_NATS_STREAM_REPLICAS": str(NATS_NODES)}
        for service in ("ledger", "keys", "proxy", "bff", "worker"):
            for i in range(self.cluster.replicas.get(service, 0)):
                name = f"{service}-{i + 1}"
                env = dict(shared)
                if service == "proxy":
                    leases = i < len(self.cluster.proxy_leases) and self.cluster.proxy_leases[i]
                    env["CG_PROXY_LEASES"] = "1" if leases else "0"
                self.replicas[name] = self.build_replica(service, name, {**env, **self.config.env.get(service, {})})

    def _start_all(self, procs: list[Proc], timeout_s: float = 120) -> None:
        """Starts them together and waits until each is ready."""
        for proc in procs:
            self.procs[proc.name] = proc
            proc.start()
        for proc in procs:
            proc.wait_ready(timeout_s)

    def _wait_nats_cluster(self, nodes: list[NatsNode], timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        for node in nodes:
            check = nats_cluster_ready(node.monitor_port)
            while not check():
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{node.name} did not join the JetStream cluster:\n{self.procs[node.name].tail()}"
                    )
                time.sleep(0.25)

    def start(self) -> Cluster:
        self.var.mkdir(parents=True, exist_ok=True)
        try:
            self._start_all([self._nats_proc(node) for node in self.nats_nodes])
            self._wait_nats_cluster(self.nats_nodes)
            self._replicas()
            by_service = {
                s: [self.replicas[n] for n in self.replica_names(s)] for s in ("proxy", "bff", "keys", "ledger")
            }
            conf = self.var / "haproxy.cfg"
            conf.write_text(haproxy_config({name: self.ports[name] for name in LB_FRONTENDS}, by_service))
            lb = Proc(
                "haproxy",
                [haproxy_binary(), "-db", "-f", str(conf)],
                {},
                self.var / "logs" / "haproxy.log",
                tcp_open(self.ports["proxy"]),
                echo=self.config.echo,
            )
            mock = self._build("mock")
            self._start_all([lb, mock])
            # the first of ledger, keys and bff first (each migrates its own database, the bff
            # makes its admin), then every other replica
            firsts = [self.replicas[f"{s}-1"].proc for s in ("ledger", "keys", "bff") if f"{s}-1" in self.replicas]
            self._start_all(firsts)
            self._start_all([r.proc for r in self.replicas.values() if r.proc not in firsts])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Entry points first, then what they call: proxies, workers, bffs, keys, ledger,
        then the mock, the load balancer and NATS."""
        order = ("proxy", "worker", "bff", "keys", "ledger")
        names = [n for s in order for n in self.replica_names(s)]
        names += ["mock", "haproxy", *(node.name for node in self.nats_nodes)]
        for name in names:
            if name in self.procs:
                self.procs[name].stop()

    def kill(self, name: str) -> None:
        """SIGKILL: no drain, nothing in memory survives."""
        self.procs[name].kill()

    def restart(self, *names: str, timeout_s: float = 120) -> None:
        """Starts stopped or killed processes again (together), on the same ports and files,
        and waits until each is ready (a NATS node: back in the JetStream cluster)."""
        for name in names:
            if self.procs[name].running:
                raise RuntimeError(f"{name} is running")
        for name in names:
            self.procs[name].start()
        for name in names:
            self.procs[name].wait_ready(timeout_s)
        self._wait_nats_cluster([n for n in self.nats_nodes if n.name in names], timeout_s)

    def __enter__(self) -> Cluster:
        return self.start()

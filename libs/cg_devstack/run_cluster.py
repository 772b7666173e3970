"""``make run-cluster``: many replicas of every service behind haproxy, on one local
PostgreSQL and a 3-node NATS JetStream cluster (``cg_devstack.cluster``), with the demo
key and users of ``make run``; prints where to point an SDK and the portal.

Its state is kept under ``var/cluster`` (``CG_DEVSTACK_VAR``): PostgreSQL's data, the
JetStream stores, logs, the demo key. It binds the ports ``make run`` does (the load
balancer's front ends), so run one or the other, or give this one
``CG_DEVSTACK_PORT_OFFSET``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from cg_devstack.__main__ import banner
from cg_devstack.cluster import Cluster, ClusterConfig
from cg_devstack.postgres import PG_BIN, binaries_present, local_server
from cg_devstack.seed import Seeder, ensure_demo, ensure_demo_users

PG_PORT = 55432  # beside a system PostgreSQL on 5432


def cluster_banner(cluster: Cluster) -> str:
    lines = ["replicas (each also reachable past the load balancer):"]
    for name, replica in cluster.replicas.items():
        lines.append(f"  {name:<9} {replica.addr}")
    lines.append("  nats      " + cluster.nats_url)
    lines.append(
        f"haproxy:         {cluster.var / 'haproxy.cfg'} (keys {cluster.keys_addr}, ledger {cluster.ledger_addr})"
    )
    return "\n".join(lines)


def main() -> int:
    if not binaries_present():
        print(f"make run-cluster needs PostgreSQL 15 in {PG_BIN}: apt-get install postgresql-15", file=sys.stderr)
        return 1
    var = Path(os.environ.get("CG_DEVSTACK_VAR", "var/cluster")).resolve()
    offset = int(os.environ.get("CG_DEVSTACK_PORT_OFFSET", "0"))
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.ExitStack() as running:
        print(f"starting PostgreSQL (data in {var / 'pg'}) ...", flush=True)
        pg = running.enter_context(local_server(var / "pg", port=PG_PORT + offset))
        databases = {name: pg.ensure_database(f"creditgate_{name}") for name in ("keys", "ledger", "bff")}
        config = ClusterConfig(var_dir=var, databases=databases, fixed_ports=True, port_offset=offset, echo=sys.stdout)
        cluster = Cluster(config)
        running.callback(cluster.stop)
        running.callback(print, "stopping...", flush=True)  # callbacks run last first: this one, then the stop
        cluster.start()
        seeder = Seeder(cluster.keys_addr, cluster.ledger_addr)
        try:
            key = ensure_demo(seeder, cluster.var)
            users = ensure_demo_users(seeder, cluster.var, cluster.bff_url, cluster.bff_admin, key.partner_id)
        finally:
            seeder.close()
        print(banner(cluster, key, users, "make run-cluster") + cluster_banner(cluster), flush=True)
        reported: set[str] = set()
        while not stop.is_set():
            for name, proc in cluster.procs.items():
                if not proc.running and name not in reported:
                    reported.add(name)
                    print(f"{name} exited (the others carry on; Ctrl-C stops them all)", file=sys.stderr, flush=True)
            stop.wait(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

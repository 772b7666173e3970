"""Prometheus multiprocess mode, for a server whose port is served by several worker
processes (the proxy with ``CG_PROXY_WORKERS`` > 1): a scrape lands on any one worker,
and must show the sum of them all.

prometheus_client keeps each process's values in files of ``PROMETHEUS_MULTIPROC_DIR``
when that variable is set *before it is imported*, so the supervisor calls ``prepare``
before it spawns the workers (they inherit the environment); ``/metrics``
(``cglib.metrics.metrics_route``) then reads every process's files (``registry``).
Counters and histograms of a worker that died stay in the sum (they only grow); gauges
are declared ``livesum`` and a dead worker's are dropped: at its exit
(``process_exit``), or at the next scrape if it died without one (``registry`` reaps
the files of processes that no longer exist).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


def prepare(directory: str | Path) -> Path:
    """An empty ``directory`` (a previous run's files removed), named in the environment
    of the processes started from now on."""
    path = Path(directory).resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[ENV] = str(path)
    return path


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


def _reap(directory: str) -> None:
    """Drops the live gauges of processes that died without ``process_exit``."""
    for name in os.listdir(directory):
        m = _LIVE_GAUGE_FILE.match(name)
        if m and not _alive(pid := int(m.group(1))):
            mark_process_dead(pid, directory)


def registry() -> CollectorRegistry | None:
    """A registry summing every process's metrics, or None when not in multiprocess mode."""
    directory = os.environ.get(ENV)
    if not directory:
        return None
    _reap(directory)
    reg = CollectorRegistry()
    MultiProcessCollector(reg, path=directory)
    return reg


def process_exit() -> None:
    """At a worker's graceful exit: its live gauges leave the sum."""
    directory = os.environ.get(ENV)
    if directory:
        mark_process_dead(os.getpid(), directory)

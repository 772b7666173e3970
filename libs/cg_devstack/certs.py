"""Mutual TLS for a development stack (``StackConfig(mtls=True)``, ``CG_DEVSTACK_MTLS=1 make run``):
the CA and certificates ``make certs`` makes (``deploy/certs/devcerts.py``), in ``<var>/certs``,
and what a process of the stack or a client of it needs to use them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc

from cglib.tls import ENV_CA_FILE, ENV_CERT_FILE, ENV_KEY_FILE, Tls, load

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "certs" / "devcerts.py"


def mtls_from_env() -> bool:
    """``CG_DEVSTACK_MTLS=1``: ``make run`` (and its helpers) with mutual TLS between the services."""
    return os.environ.get("CG_DEVSTACK_MTLS", "").strip().lower() in ("1", "true", "yes", "on")


def certs_dir_from_env(var: Path) -> Path | None:
    """The certificates of the stack ``make run`` started in ``var``, when it runs mutual TLS."""
    return var / "certs" if mtls_from_env() else None


def make_certs(out: Path) -> Path:
    """The development CA and every service's certificate in ``out`` (kept when still good)."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{SCRIPT.name} failed ({done.returncode}): {done.stderr.strip()}")
    return out


def tls_env(certs: Path, service: str) -> dict[str, str]:
    """The CG_TLS_* variables of ``service``'s process."""
    return {
        ENV_CA_FILE: str(certs / "ca.crt"),
        ENV_CERT_FILE: str(certs / f"{service}.crt"),
        ENV_KEY_FILE: str(certs / f"{service}.key"),
    }


def tls_of(certs: Path, service: str) -> Tls:
    env = tls_env(certs, service)
    return load(env[ENV_CA_FILE], env[ENV_CERT_FILE], env[ENV_KEY_FILE], expect=service)


def sync_channel(addr: str, certs: Path | None, identity: str) -> grpc.Channel:
    """A blocking channel to a service of the stack: plaintext, or with ``certs`` as ``identity``."""
    if certs is None:
        return grpc.insecure_channel(addr)
    return grpc.secure_channel(addr, tls_of(certs, identity).channel_credentials())

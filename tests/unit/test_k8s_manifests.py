"""The Kubernetes manifests (deploy/k8s), checked offline against Kubernetes and the code.

Every overlay is rendered with `kubectl kustomize` and each object validated (strictly)
against the Kubernetes schemas bundled by kubernetes-validate. Then against the code:
every CG_* variable a container gets (its env and the ConfigMaps it loads) is a setting its
service reads, the required ones are there and the whole environment parses as the service
would parse it; ports, Services, addresses and probes meet the ports and routes the
services listen on; pods are hardened; secrets are referenced, never written; the proxy
keeps its outbox and journal on a volume of its own; migrations run in the Job alone; and
the NetworkPolicies allow exactly the calls the configuration makes (evaluated pod to pod).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from support.deploy import (
    MTLS_SERVICES,
    ROOT,
    STREAM_REPLICAS_ENV,
    TLS_ENV,
    build_settings,
    check_env_name,
    is_secret,
    port_fields,
    prefix_of,
)

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests are meant for (matchLabelKeys: 1.27+)
SERVICES = ("keys", "ledger", "proxy", "worker", "bff")
# Settings without which a service must not run in a cluster (beyond the addresses checked below).
REQUIRED = {
    "keys": {"CG_KEYS_DATABASE_URL", "CG_KEYS_NATS_URL", "CG_KEYS_LEDGER_ADDR"},
    "ledger": {"CG_LEDGER_DATABASE_URL", "CG_LEDGER_NATS_URL"},
    "proxy": {"CG_PROXY_KEYS_ADDR", "CG_PROXY_LEDGER_ADDR", "CG_PROXY_NATS_URL", "CG_PROXY_OUTBOX_PATH"},
    "worker": {"CG_WORKER_NATS_URL", "CG_WORKER_KEYS_ADDR", "CG_WORKER_LEDGER_ADDR", "CG_WORKER_BFF_ADDR"},
    "bff": {
        "CG_BFF_DATABASE_URL",
        "CG_BFF_NATS_URL",
        "CG_BFF_KEYS_ADDR",
        "CG_BFF_LEDGER_ADDR",
        "CG_BFF_INTERNAL_TOKEN",
        "CG_BFF_WEBHOOK_SECRET_KEYS",
        "CG_BFF_BOOTSTRAP_ADMIN_PASSWORD",
    },
}
# Two services that must agree on a secret read it from the same Secret key.
SHARED_SECRETS = [(("bff", "CG_BFF_INTERNAL_TOKEN"), ("worker", "CG_WORKER_BFF_TOKEN"))]
# What a Secret key stands for in the test's environment (any valid value).
SECRET_VALUES = {
    "keys-database-url": "postgresql://u:p@postgres:5432/keys",
    "ledger-database-url": "postgresql://u:p@postgres:5432/ledger",
    "bff-database-url": "postgresql://u:p@postgres:5432/bff",
    "webhook-secret-keys": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
}
# HTTP probes: service -> (probe kind -> path). The paths must be routes of the service.
HTTP_PROBES = {
    "proxy": {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"},
    "bff": {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/healthz"},
    "worker": {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"},
}
# gRPC probes (grpc.health.v1): on the plaintext health port, as mutual TLS is on.
GRPC_PROBES = {"keys": "health_port", "ledger": "health_port"}
# what the worker's metrics port answers (cglib.metrics.serve_metrics)
WORKER_HEALTH_PATHS = ("/healthz", "/readyz", "/metrics")
PROBE_PORT_FIELD = {"proxy": "port", "bff": "port", "worker": "metrics_port"}


# -- rendering -------------------------------------------------------------------------------


def kubectl() -> str:
    exe = shutil.which("kubectl")
    if exe is None:
        pytest.fail("kubectl is not installed: these tests render deploy/k8s with `kubectl kustomize` (offline)")
    return exe


def render(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, f"kubectl kustomize {path.relative_to(ROOT)}: {proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@dataclass
class Rendered:
    name: str
    objects: list[dict[str, Any]]

    def of(self, kind: str) -> dict[str, dict[str, Any]]:
        return {o["metadata"]["name"]: o for o in self.objects if o["kind"] == kind}

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = self.of(kind)
        assert name in found, f"{self.name}: no {kind} {name}"
        return found[name]

    def workloads(self) -> dict[str, dict[str, Any]]:
        """Every object with a pod template, by name (Deployments, StatefulSets, Jobs)."""
        return {o["metadata"]["name"]: o for o in self.objects if o["kind"] in ("Deployment", "StatefulSet", "Job")}

    def app(self, service: str) -> dict[str, Any]:
        return self.get("StatefulSet" if service == "proxy" else "Deployment", service)

    def container(self, service: str) -> dict[str, Any]:
        containers = self.app(service)["spec"]["template"]["spec"]["containers"]
        return next(c for c in containers if c["name"] == service)

    def env(self, container: dict[str, Any]) -> dict[str, Any]:
        """The container's environment: name -> a value, or the env entry's valueFrom."""
        env: dict[str, Any] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(self.get("ConfigMap", source["configMapRef"]["name"])["data"])
            else:
                assert source["secretRef"].get("optional"), f"{container['name']}: envFrom a required Secret"
        for entry in container.get("env", []):
            env[entry["name"]] = entry["value"] if "value" in entry else entry["valueFrom"]
        return env

    def plain_env(self, container: dict[str, Any]) -> dict[str, str]:
        """The environment with Secret references and the downward API replaced by test values."""
        out = {}
        for name, value in self.env(container).items():
            if isinstance(value, str):
                out[name] = value
            elif "secretKeyRef" in value:
                out[name] = SECRET_VALUES.get(value["secretKeyRef"]["key"], "a-test-secret-value-0123456789")
            elif "resourceFieldRef" in value:
                out[name] = "2"
            else:
                pytest.fail(f"{name}: unknown valueFrom {value}")
        return out


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> Iterator[Rendered]:
    yield Rendered(request.param, render(K8S / "overlays" / request.param))


def pod_specs(r: Rendered) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, w in r.workloads().items():
        yield name, w["spec"]["template"]["spec"]


# -- Kubernetes -------------------------------------------------------------------------------


def test_there_are_overlays() -> None:
    assert set(OVERLAYS) == {"dev", "production"}


def test_overlays_validate_against_the_kubernetes_schemas(overlay: Rendered) -> None:
    errors = []
    for obj in overlay.objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {e.message} at {list(e.path)}")
    assert not errors, "\n".join(errors)
    assert not overlay.of("Secret"), "a Secret written in the manifests"


def test_validation_catches_a_misspelt_field() -> None:
    """The schemas are strict: a field Kubernetes does not know fails, so the test above means something."""
    deployment = render(K8S / "base")
    bad = next(o for o in deployment if o["kind"] == "Deployment")
    bad["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {"grpc": {"port": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def test_each_service_has_a_workload_and_a_service(overlay: Rendered) -> None:
    for service in SERVICES:
        app = overlay.app(service)
        labels = app["spec"]["template"]["metadata"]["labels"]
        assert app["spec"]["selector"]["matchLabels"].items() <= labels.items(), service
        svc = overlay.get("Service", service)
        assert svc["spec"]["selector"].items() <= labels.items(), service
        named = {p["name"]: p["containerPort"] for p in overlay.container(service)["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in named, (
                f"Service {service}: targetPort {port['targetPort']} is no container port"
            )
        ann = app["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"
        assert int(ann["prometheus.io/port"]) in named.values(), service


# -- environment vs Settings ------------------------------------------------------------------


def test_env_names_are_settings_the_services_read(overlay: Rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    for service in SERVICES:
        env = overlay.env(overlay.container(service))
        for var in env:
            check_env_name(service, var)
        missing = REQUIRED[service] - set(env)
        assert not missing, f"{overlay.name}: {service} lacks {missing}"
        plain = overlay.plain_env(overlay.container(service))
        assert plain[f"{prefix_of(service)}HOST"] == "0.0.0.0", service
        build_settings(service, plain, monkeypatch)  # parses as the service would
        if service in MTLS_SERVICES:
            assert set(TLS_ENV) <= set(env), f"{service}: mutual TLS not configured"
        nats = overlay.of("StatefulSet").get("nats")
        if nats:  # an in-cluster NATS cluster: every stream on every node
            assert env.get(STREAM_REPLICAS_ENV) == str(nats["spec"]["replicas"]), f"{service}: {STREAM_REPLICAS_ENV}"
    mock = overlay.workloads().get("mock-upstream")
    if mock:
        for var in overlay.env(mock["spec"]["template"]["spec"]["containers"][0]):
            check_env_name("mock-upstream", var)


def test_secrets_are_referenced_never_written(overlay: Rendered) -> None:
    refs = {}
    for service in SERVICES:
        for var, value in overlay.env(overlay.container(service)).items():
            if not is_secret(service, var):
                continue
            assert isinstance(value, dict) and "secretKeyRef" in value, f"{service}: {var} is not from a Secret"
            refs[(service, var)] = (value["secretKeyRef"]["name"], value["secretKeyRef"]["key"])
        for var, value in overlay.env(overlay.container(service)).items():
            if var.endswith("_DATABASE_URL"):  # it carries the password
                assert isinstance(value, dict) and "secretKeyRef" in value, f"{service}: {var}"
    for one, other in SHARED_SECRETS:
        assert refs[one] == refs[other], f"{one} and {other} may differ"


def test_mutual_tls_certificates_are_mounted_from_secrets(overlay: Rendered) -> None:
    """Each gRPC service mounts its own Secret (`make certs` output) where CG_TLS_* point."""
    for service in MTLS_SERVICES:
        spec = overlay.app(service)["spec"]["template"]["spec"]
        env = overlay.env(overlay.container(service))
        dirs = {str(Path(env[var]).parent) for var in TLS_ENV}
        assert len(dirs) == 1, env
        tls_dir = dirs.pop()
        mount = next(m for m in overlay.container(service)["volumeMounts"] if m["mountPath"] == tls_dir)
        assert mount.get("readOnly") is True
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        assert volume["secret"]["secretName"] == f"creditgate-tls-{service}"
        assert [Path(env[var]).name for var in TLS_ENV] == ["ca.crt", "tls.crt", "tls.key"]


# -- ports, addresses, probes -----------------------------------------------------------------


def listen_ports(r: Rendered, service: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    return port_fields(service, build_settings(service, r.plain_env(r.container(service)), monkeypatch))


def service_target(r: Rendered, host: str, port: int) -> tuple[str, int]:
    """A Service name and port -> (the app.kubernetes.io/name of its pods, the container port)."""
    svc = r.get("Service", host)
    entry = next((p for p in svc["spec"]["ports"] if p["port"] == port), None)
    assert entry is not None, f"Service {host} has no port {port}"
    app = svc["spec"]["selector"]["app.kubernetes.io/name"]
    target = entry.get("targetPort", port)
    if isinstance(target, str):
        workload = r.workloads()[app]
        ports = {
            p["name"]: p["containerPort"]
            for c in workload["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        target = ports[target]
    return app, target


def calls(r: Rendered, service: str) -> set[tuple[str, int]]:
    """The (host, port) pairs a service's configuration makes it dial (its database, whose
    URL is in a Secret, aside)."""
    out = set()
    for var, value in r.plain_env(r.container(service)).items():
        if var.endswith("_DATABASE_URL"):
            continue
        if var.endswith("_ADDR"):
            host, port = value.rsplit(":", 1)
            out.add((host, int(port)))
        elif var.endswith(("_URL", "__BASE_URL")) and "PUBLIC" not in var:
            parts = urlsplit(value)
            if parts.hostname and parts.port:
                out.add((parts.hostname, parts.port))
    return out


def test_container_ports_and_addresses_meet_listening_ports(overlay: Rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    for service in SERVICES:
        listening = listen_ports(overlay, service, monkeypatch)
        declared = {p["containerPort"] for p in overlay.container(service)["ports"]}
        assert declared <= set(listening.values()), f"{service}: {declared} vs {listening}"
        for host, port in calls(overlay, service):
            if host not in overlay.of("Service"):
                assert overlay.name == "production" and host.endswith(".internal"), f"{service}: {host} is no Service"
                continue
            app, target = service_target(overlay, host, port)
            if app in SERVICES:
                field = "grpc_port" if (app, port) == ("bff", 50053) else "port"
                assert target == listen_ports(overlay, app, monkeypatch)[field], f"{service} -> {host}:{port}"


def route_paths(package: str) -> set[str]:
    """String paths registered as routes in a service package (``@app.get("/x")``,
    ``add_route("/x", ...)``, ``Route("/x", ...)``), read from its source."""
    paths = set()
    for path in (ROOT / "services").glob(f"*/{package}/**/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and node.args[0].value.startswith("/")
                and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("get", "add_route", "Route")
            ):
                paths.add(node.args[0].value)
    return paths


def test_probes_hit_the_services_health_endpoints(overlay: Rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    for service in SERVICES:
        container = overlay.container(service)
        listening = listen_ports(overlay, service, monkeypatch)
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container[kind]
            if service in GRPC_PROBES:
                assert probe["grpc"]["port"] == listening[GRPC_PROBES[service]], f"{service} {kind}"
                assert probe["grpc"]["port"] in named.values(), f"{service}: probe port not declared"
                continue
            get = probe["httpGet"]
            port = named.get(get["port"], get["port"])
            assert port == listening[PROBE_PORT_FIELD[service]], f"{service} {kind}: port {port}"
            want = HTTP_PROBES[service][kind]
            assert get["path"] == want, f"{service} {kind}"
            if service == "worker":  # its metrics port's own routes (cg_worker.health)
                assert want in WORKER_HEALTH_PATHS, f"cg_worker has no route {want}"
            else:
                assert want in route_paths(f"cg_{service}"), f"cg_{service} has no route {want}"
    # a probe that waits out the migration Job: as long as the service waits for it
    for service in ("keys", "ledger", "bff"):
        startup = overlay.container(service)["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        wait = build_settings(service, overlay.plain_env(overlay.container(service)), monkeypatch).schema_wait_s
        assert budget >= wait, f"{service}: startupProbe gives {budget} s, the schema wait is {wait} s"


# -- pods ---------------------------------------------------------------------------------------


def test_pods_are_hardened(overlay: Rendered) -> None:
    for name, spec in pod_specs(overlay):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec.get("automountServiceAccountToken") is False, name
        mounts_of = {}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, f"{name}/{c['name']}"
            assert sc["readOnlyRootFilesystem"] is True, f"{name}/{c['name']}"
            assert sc["capabilities"]["drop"] == ["ALL"], f"{name}/{c['name']}"
            for side in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][side]), f"{name}/{c['name']} {side}"
            mounts_of[c["name"]] = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        if name in SERVICES or name == "creditgate-migrate":
            volumes = {v["name"]: v for v in spec["volumes"]}
            for c, mounts in mounts_of.items():
                assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}/{c}: /tmp"


def test_proxy_keeps_outbox_and_journal_on_its_own_volume(overlay: Rendered) -> None:
    sts = overlay.get("StatefulSet", "proxy")
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    container = overlay.container("proxy")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    env = overlay.env(container)
    for var in ("CG_PROXY_OUTBOX_PATH", "CG_PROXY_JOURNAL_PATH"):
        mount = str(Path(env[var]).parent)
        assert mounts.get(mount) in claims, f"{var}={env[var]} is not on a per-replica volume claim"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    # one worker process per CPU of the limit, not per core of the node
    ref = env["CG_PROXY_WORKERS"]["resourceFieldRef"]
    assert (ref["containerName"], ref["resource"], str(ref["divisor"])) == ("proxy", "limits.cpu", "1")
    hpa = overlay.get("HorizontalPodAutoscaler", "proxy")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "proxy"}
    assert hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    pdb = overlay.get("PodDisruptionBudget", "proxy")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()


def test_migrations_run_in_the_job_alone(overlay: Rendered) -> None:
    job = overlay.get("Job", "creditgate-migrate")
    by_service = {c["name"]: c for c in job["spec"]["template"]["spec"]["containers"]}
    owners = [s for s in SERVICES if f"{prefix_of(s)}DATABASE_URL" in overlay.env(overlay.container(s))]
    assert sorted(by_service) == sorted(owners) == ["bff", "keys", "ledger"]
    for service in owners:
        c = by_service[service]
        assert c["command"] == ["python", "-m", f"cg_{service}.migrate"]
        assert c["image"] == overlay.container(service)["image"], f"{service}: the Job migrates with other code"
        assert (ROOT / "services" / service / f"cg_{service}" / "migrate.py").is_file()
        var = f"{prefix_of(service)}DATABASE_URL"
        assert overlay.env(c)[var] == overlay.env(overlay.container(service))[var], service
        assert overlay.env(overlay.container(service))[f"{prefix_of(service)}MIGRATE_AT_START"] == "false"


# -- NetworkPolicies ---------------------------------------------------------------------------


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def peer_matches(peer: dict[str, Any], labels: dict[str, str]) -> bool:
    """A pod of this namespace (ipBlocks are taken as outside the cluster)."""
    if "ipBlock" in peer:
        return False
    return matches(peer.get("podSelector", {}), labels)


def allowed(policies: list[dict[str, Any]], src: dict[str, str], dst: dict[str, str], port: int) -> bool:
    def side(direction: str, pod: dict[str, str], other: dict[str, str]) -> bool:
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        selecting = [
            p for p in policies if direction in p["spec"]["policyTypes"] and matches(p["spec"]["podSelector"], pod)
        ]
        for policy in selecting:
            for rule in policy["spec"].get(key, []):
                peers = rule.get(peers_key)
                ports = rule.get("ports")
                if (peers is None or any(peer_matches(p, other) for p in peers)) and (
                    ports is None or any(p["port"] == port for p in ports)
                ):
                    return True
        return not selecting

    return side("Egress", src, dst) and side("Ingress", dst, src)


def test_network_policies_allow_exactly_the_configured_calls(
    overlay: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    policies = list(overlay.of("NetworkPolicy").values())
    deny = overlay.get("NetworkPolicy", "default-deny")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    pods = {name: w["spec"]["template"]["metadata"]["labels"] for name, w in overlay.workloads().items()}
    listening = {
        name: {p["containerPort"] for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for name, w in overlay.workloads().items()
    }
    # who dials whom, from the configuration: addresses and URLs, and the database owners
    expected = set()
    for service in SERVICES:
        for host, port in calls(overlay, service):
            if host in overlay.of("Service"):
                expected.add((service, *service_target(overlay, host, port)))
    for owner in ("keys", "ledger", "bff", "creditgate-migrate"):
        if "postgres" in pods:
            expected.add((owner, "postgres", 5432))
    if "nats" in pods:
        expected.add(("nats", "nats", 6222))  # cluster routes
    got = {
        (src, dst, port)
        for src, src_labels in pods.items()
        for dst, dst_labels in pods.items()
        for port in listening[dst]
        if (src != dst or dst == "nats") and allowed(policies, src_labels, dst_labels, port)
    }
    assert got == expected, f"allowed but not configured: {got - expected}; configured but denied: {expected - got}"
    # the public ports take traffic from outside the namespace; the gRPC ports do not
    outside = {"app.kubernetes.io/name": "ingress-nginx"}
    for name, port, public in (
        ("proxy", 8080, True),
        ("bff", 8090, True),
        ("keys", 50051, False),
        ("ledger", 50052, False),
    ):
        ingress_ok = any(
            matches(p["spec"]["podSelector"], pods[name])
            and any(
                r.get("from") is None and any(x["port"] == port for x in r.get("ports", []))
                for r in p["spec"].get("ingress", [])
            )
            for p in policies
        )
        assert ingress_ok == public, (name, port)
        assert not allowed(policies, outside, pods[name], port) or public
    # with external PostgreSQL and NATS, exactly their users may leave for them
    if "postgres" not in pods:
        for owner, port in [(o, 5432) for o in ("keys", "ledger", "bff", "creditgate-migrate")] + [
            (s, 4222) for s in SERVICES
        ]:
            assert any(
                matches(p["spec"]["podSelector"], pods[owner])
                and any("ipBlock" in peer for r in p["spec"].get("egress", []) for peer in r.get("to", []))
                and any(x["port"] == port for r in p["spec"].get("egress", []) for x in r.get("ports", []))
                for p in policies
            ), f"{owner} cannot reach the external service on {port}"
    _ = monkeypatch


# -- the in-cluster PostgreSQL ------------------------------------------------------------------


def test_in_cluster_postgres_makes_every_database() -> None:
    component = (K8S / "components" / "in-cluster-postgres" / "init.sql").read_text()
    compose = (ROOT / "deploy" / "postgres" / "init.sql").read_text()
    made = re.findall(r"CREATE DATABASE (\w+);", component)
    assert made == re.findall(r"CREATE DATABASE (\w+);", compose) == ["keys", "ledger", "bff"]

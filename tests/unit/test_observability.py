"""The metrics every service exports, their documentation, and what the dashboard and the
alert rules ask of them: one naming scheme, every metric in docs/metrics.md (and nothing
listed there that is not exported), alert rules in Prometheus's rule-group shape, and no
query or rule naming a metric no service exports.

The exported names are collected from the services themselves: every module of every
service and of cglib is imported, and what they registered with prometheus_client is read
back from its registry."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cg_proxy", "cg_keys", "cg_ledger", "cg_worker", "cg_bff", "cglib")
NAME_SCHEME = re.compile(r"^cg_(proxy|keys|ledger|worker|bff|grpc_server|database)_[a-z0-9_]+$")
METRIC_IN_QUERY = re.compile(r"\b(cg_[a-z0-9_]+)\b")
DURATION = re.compile(r"^\d+[smhdw]$")
# the samples each type exports, by suffix of the family's name
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count", ""),
}
DOCUMENTED_SUFFIX = {"counter": "_total", "gauge": "", "histogram": "", "summary": ""}


def _import_every_module() -> None:
    for top in PACKAGES:
        package = importlib.import_module(top)
        for info in pkgutil.walk_packages(package.__path__, f"{top}."):
            if ".migrations" in info.name:  # Alembic scripts: nothing to register, not importable alone
                continue
            importlib.import_module(info.name)


@pytest.fixture(scope="module")
def families() -> dict[str, str]:
    """Our metric families, by the name they are documented under: type."""
    _import_every_module()
    found = {}
    for family in REGISTRY.collect():
        if family.name.startswith("cg_"):
            found[family.name + DOCUMENTED_SUFFIX[family.type]] = family.type
    return found


@pytest.fixture(scope="module")
def exported(families: dict[str, str]) -> set[str]:
    """Every sample name a query may use."""
    names = set()
    for documented, kind in families.items():
        base = documented.removesuffix("_total") if kind == "counter" else documented
        names.update(base + suffix for suffix in SUFFIXES[kind])
    return names


def documented() -> dict[str, str]:
    """The table of docs/metrics.md: name -> type."""
    rows = re.findall(r"^\| `(cg_[a-z0-9_]+)` \| (\w+) \|", (ROOT / "docs/metrics.md").read_text(), re.M)
    return dict(rows)


def test_every_service_exports_what_the_dashboard_needs(families):
    # a few of each service, so an import that silently registers nothing is caught
    for name in (
        "cg_proxy_requests_total",
        "cg_proxy_outbox_events",
        "cg_proxy_outbox_dead_lettered_total",
        "cg_grpc_server_handled_total",
        "cg_ledger_reservations_outstanding",
        "cg_worker_consumer_pending",
        "cg_bff_consumer_pending",
        "cg_database_up",
    ):
        assert name in families, name


def test_one_naming_scheme(families):
    wrong = [n for n in families if not NAME_SCHEME.match(n)]
    assert not wrong, f"outside cg_<service>_… / cg_<subsystem>_…: {wrong}"
    counters = [n for n, kind in families.items() if kind == "counter"]
    assert all(n.endswith("_total") for n in counters)


def test_docs_list_exactly_the_exported_metrics_with_their_types(families):
    docs = documented()
    assert set(families) - set(docs) == set(), "exported but not in docs/metrics.md"
    assert set(docs) - set(families) == set(), "in docs/metrics.md but not exported"
    assert {n: docs[n] for n in families} == families, "a type in docs/metrics.md is wrong"


def test_the_alert_rules_are_prometheus_rule_groups_on_exported_metrics(exported):
    rules_file = yaml.safe_load((ROOT / "deploy/observability/alerts.yml").read_text())
    assert set(rules_file) == {"groups"} and rules_file["groups"]
    names = set()
    for group in rules_file["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"} and group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
            assert isinstance(rule["alert"], str) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", rule["alert"])
            assert rule["alert"] not in names, f"two rules named {rule['alert']}"
            names.add(rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].count("(") == rule["expr"].count(")")
            if "for" in rule:
                assert DURATION.match(rule["for"]), rule["for"]
            for part in ("labels", "annotations"):
                assert all(isinstance(k, str) and isinstance(v, str) for k, v in rule.get(part, {}).items())
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            used = set(METRIC_IN_QUERY.findall(rule["expr"]))
            assert used, f"{rule['alert']}: uses no metric of ours"
            assert used <= exported, f"{rule['alert']}: not exported: {sorted(used - exported)}"
    # the alerts the gateway needs: errors, ledger lag, the outbox growing, consumer lag
    assert {
        "CreditgateProxyErrorRate",
        "CreditgateLedgerLag",
        "CreditgateOutboxGrowing",
        "CreditgateConsumerLag",
    } <= names


def test_the_dashboard_queries_exported_metrics(exported):
    dashboard = json.loads((ROOT / "deploy/observability/grafana-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(METRIC_IN_QUERY.findall(target["expr"]))
            assert names, f"{panel['title']}: a query on no metric of ours"
            used |= names
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    # request rate, errors, latency, ledger ops, outbox, consumer lag, reservations
    for name in (
        "cg_proxy_requests_total",
        "cg_proxy_request_seconds_bucket",
        "cg_grpc_server_handled_total",
        "cg_proxy_outbox_events",
        "cg_worker_consumer_pending",
        "cg_ledger_reservations_outstanding",
    ):
        assert name in used, name

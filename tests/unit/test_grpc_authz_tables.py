"""The authorization tables (cg_ledger.authz, cg_keys.authz, cg_bff.webhooks.authz): complete,
and what must never change without thought."""

from __future__ import annotations

import pytest

from cg_bff.webhooks import authz as bff_authz
from cg_keys import authz as keys_authz
from cg_ledger import authz as ledger_authz
from cglib.grpc_authz import policy
from creditgate.bff.v1 import bff_pb2
from creditgate.keys.v1 import keys_pb2
from creditgate.ledger.v1 import ledger_pb2

SERVERS = [
    (ledger_authz.POLICY, ledger_pb2, ["LedgerService", "LedgerAdminService"]),
    (keys_authz.POLICY, keys_pb2, ["KeysService"]),
    (bff_authz.POLICY, bff_pb2, ["WebhookService"]),
]


@pytest.mark.parametrize(("table", "module", "services"), SERVERS)
def test_every_method_of_the_server_has_an_entry(table, module, services) -> None:
    methods = {
        f"/{module.DESCRIPTOR.services_by_name[s].full_name}/{m.name}"
        for s in services
        for m in module.DESCRIPTOR.services_by_name[s].methods
    }
    assert set(table) == methods


def callers(table, method: str) -> set[str]:
    (entry,) = [who for path, who in table.items() if path.endswith(f"/{method}")]
    return set(entry)


def test_money_comes_in_only_through_the_bff_and_moves_to_keys_only_through_keys() -> None:
    t = ledger_authz.POLICY
    assert callers(t, "Deposit") == {"bff"}
    assert callers(t, "Transfer") == set()
    assert callers(t, "GrantAiCredits") == {"bff"}
    for method in ("FundKey", "RefundKey", "HoldKeyDeposit", "ReleaseKeyDeposit"):
        assert callers(t, method) == {"keys"}, method


def test_holds_and_settlements_are_the_proxys_alone() -> None:
    for method in ("Reserve", "SettleBatch", "Void", "AcquireLease", "ExtendLease", "ReleaseLease", "SettleLeased"):
        assert callers(ledger_authz.POLICY, method) == {"proxy"}, method


def test_the_proxy_only_authenticates_keys_and_the_worker_never_creates_them() -> None:
    t = keys_authz.POLICY
    assert {m.rsplit("/", 1)[1] for m, who in t.items() if "proxy" in who} == {"AuthenticateKey"}
    assert callers(t, "AuthenticateKey") == {"proxy"}
    assert "worker" not in callers(t, "CreateKey") | callers(t, "CreatePartner") | callers(t, "RegenerateKey")
    assert callers(bff_authz.POLICY, "ClaimDelivery") == callers(bff_authz.POLICY, "RecordAttempt") == {"worker"}


def test_a_table_that_forgets_a_method_or_names_a_stranger_is_refused() -> None:
    service = bff_pb2.DESCRIPTOR.services_by_name["WebhookService"]
    with pytest.raises(ValueError, match="no entry for RecordAttempt"):
        policy(service, {"ClaimDelivery": {"worker"}})
    with pytest.raises(ValueError, match="Nope is not a method"):
        policy(service, {"ClaimDelivery": {"worker"}, "RecordAttempt": {"worker"}, "Nope": set()})
    with pytest.raises(ValueError, match="is not a service"):
        policy(service, {"ClaimDelivery": {"operator"}, "RecordAttempt": {"worker"}})

"""Internal mutual TLS, end to end: the whole stack started with ``StackConfig(mtls=True)``
(certificates made by deploy/certs/devcerts.py, every service with its own), real TLS
handshakes against the real keys, ledger and BFF processes, and a chat completion through
proxy -> keys/ledger over mTLS, billed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cg_devstack import Stack, StackConfig
from cg_devstack.certs import make_certs, tls_env, tls_of
from cg_devstack.seed import Seeder
from cglib.healthcheck import check_grpc
from cglib.money import UCR_PER_CREDIT
from creditgate.bff.v1 import bff_pb2, bff_pb2_grpc
from creditgate.keys.v1 import keys_pb2, keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from helpers import client, eventually, expected_cost_ucr

TIMEOUT = 5


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="cg-mtls-") as var, Stack(StackConfig(var_dir=Path(var), mtls=True)) as s:
        yield s


@pytest.fixture(scope="module")
def seeder(stack: Stack) -> Iterator[Seeder]:
    s = Seeder(stack.keys_addr, stack.ledger_addr, stack.certs_dir)
    yield s
    s.close()


@pytest.fixture(scope="module")
def foreign_certs(tmp_path_factory) -> Path:
    """A CA of its own and certificates with the very same names: not ours."""
    return make_certs(tmp_path_factory.mktemp("foreign") / "certs")


def as_service(stack: Stack, addr: str, identity: str, certs: Path | None = None) -> grpc.Channel:
    """A channel to ``addr`` showing ``identity``'s certificate (of ``certs``, by default the
    stack's own); the server is always checked against the stack's CA."""
    assert stack.certs_dir is not None
    own = tls_of(certs or stack.certs_dir, identity)
    ca = (stack.certs_dir / "ca.crt").read_bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=own.key_pem, certificate_chain=own.cert_pem)
    return grpc.secure_channel(addr, creds)


def deposit(channel: grpc.Channel, account: str, idempotency_id: str, credits: int) -> ledger_pb2.TransferResult:
    return ledger_pb2_grpc.LedgerServiceStub(channel).Deposit(
        ledger_pb2.DepositRequest(
            idempotency_id=idempotency_id, account=account, amount_ucr=credits * UCR_PER_CREDIT, memo="mtls test"
        ),
        timeout=TIMEOUT,
    )


def posted_ucr(seeder: Seeder, account: str) -> int:
    """The account's posted balance; 0 for one nothing was ever written to (not found)."""
    try:
        return seeder.balance_ucr(account)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return 0


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value.code()


def test_a_chat_completion_goes_through_mtls_and_is_billed(stack: Stack, seeder: Seeder) -> None:
    partner = seeder.partner(f"mtls-{uuid.uuid4().hex[:8]}", credits=100)
    key = seeder.funded_key(partner, 10, ["gpt-4o-mini"])
    before = seeder.balance_ucr(key.account)

    answer = client(stack, key.secret).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello over mutual TLS"}]
    )

    assert answer.choices[0].message.content
    assert answer.usage is not None
    cost = expected_cost_ucr("gpt-4o-mini", answer.usage.prompt_tokens, answer.usage.completion_tokens)
    assert cost > 0
    eventually(lambda: seeder.balance_ucr(key.account) == before - cost, what="the request billed over mTLS")


@pytest.mark.parametrize("server", ["keys", "ledger", "bff_grpc"])
def test_a_caller_without_a_client_certificate_never_completes_the_handshake(stack: Stack, server: str) -> None:
    assert stack.certs_dir is not None
    addr = f"127.0.0.1:{stack.ports[server]}"
    ca = (stack.certs_dir / "ca.crt").read_bytes()
    # TLS that trusts the server, but shows no certificate of its own
    with grpc.secure_channel(addr, grpc.ssl_channel_credentials(root_certificates=ca)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert code_of(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)) == (
            grpc.StatusCode.UNAVAILABLE
        )
    # plaintext on the TLS port
    with grpc.insecure_channel(addr) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert code_of(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)) == (
            grpc.StatusCode.UNAVAILABLE
        )


def test_a_certificate_of_another_ca_is_refused_and_nothing_is_written(
    stack: Stack, seeder: Seeder, foreign_certs: Path
) -> None:
    partner = seeder.partner(f"mtls-{uuid.uuid4().hex[:8]}", credits=0)
    account = f"partner:{partner}"
    idem = f"mtls-foreign:{uuid.uuid4().hex}"
    # the BFF's very name, signed by a CA that is not ours
    with as_service(stack, stack.ledger_addr, "bff", certs=foreign_certs) as channel:
        assert code_of(lambda: deposit(channel, account, idem, 500)) == grpc.StatusCode.UNAVAILABLE
    assert posted_ucr(seeder, account) == 0
    # the id was never taken: the real BFF's deposit with it is a first one, of its own amount
    with as_service(stack, stack.ledger_addr, "bff") as channel:
        deposit(channel, account, idem, 7)
    assert posted_ucr(seeder, account) == 7 * UCR_PER_CREDIT


def test_a_service_not_allowed_a_method_is_denied_and_nothing_is_written(stack: Stack, seeder: Seeder) -> None:
    partner = seeder.partner(f"mtls-{uuid.uuid4().hex[:8]}", credits=0)
    account = f"partner:{partner}"
    idem = f"mtls-denied:{uuid.uuid4().hex}"
    for who in ("proxy", "worker", "keys"):  # valid certificates, of services that may not mint credits
        with as_service(stack, stack.ledger_addr, who) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                deposit(channel, account, idem, 1_000)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "Deposit" in (refused.value.details() or "") and repr(who) in (refused.value.details() or "")
    assert posted_ucr(seeder, account) == 0
    assert "grpc call refused" in stack.procs["ledger"].log_text()
    # the service that may: the BFF (and the id is still free)
    with as_service(stack, stack.ledger_addr, "bff") as channel:
        result = deposit(channel, account, idem, 3)
    assert not result.replayed and result.amount_ucr == 3 * UCR_PER_CREDIT
    assert posted_ucr(seeder, account) == 3 * UCR_PER_CREDIT

    # keys: the proxy may authenticate keys but not make them; the worker may not make partners
    create = keys_pb2.CreateKeyRequest(
        actor=keys_pb2.Actor(partner_id=partner),
        idempotency_key=f"mtls:{uuid.uuid4().hex}",
        fields=keys_pb2.KeyFields(name="not allowed", allowed_models=["gpt-4o-mini"]),
        budget_credits=1,
    )
    with as_service(stack, stack.keys_addr, "proxy") as channel:
        keys = keys_pb2_grpc.KeysServiceStub(channel)
        assert code_of(lambda: keys.CreateKey(create, timeout=TIMEOUT)) == grpc.StatusCode.PERMISSION_DENIED
    with as_service(stack, stack.keys_addr, "worker") as channel:
        keys = keys_pb2_grpc.KeysServiceStub(channel)
        assert code_of(
            lambda: keys.CreatePartner(keys_pb2.CreatePartnerRequest(name="x", tier="growth"), timeout=TIMEOUT)
        ) == (grpc.StatusCode.PERMISSION_DENIED)
        # ... and may read the partner's keys (its rules do): none were made
        listed = keys.ListKeys(keys_pb2.ListKeysRequest(actor=keys_pb2.Actor(partner_id=partner)), timeout=TIMEOUT)
        assert list(listed.keys) == []


def test_only_the_worker_may_call_the_bff_internal_service(stack: Stack) -> None:
    request = bff_pb2.ClaimDeliveryRequest(delivery_id=str(uuid.uuid4()))
    token = (("x-cg-internal-token", stack.bff_internal_token),)
    with as_service(stack, stack.bff_grpc_addr, "proxy") as channel:
        webhooks = bff_pb2_grpc.WebhookServiceStub(channel)
        assert code_of(lambda: webhooks.ClaimDelivery(request, metadata=token, timeout=TIMEOUT)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    with as_service(stack, stack.bff_grpc_addr, "worker") as channel:
        webhooks = bff_pb2_grpc.WebhookServiceStub(channel)
        # past the authorization: the BFF answers for itself (no such delivery: nothing to deliver)
        try:
            webhooks.ClaimDelivery(request, metadata=token, timeout=TIMEOUT)
        except grpc.RpcError as e:
            assert e.code() not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE), e


@pytest.mark.parametrize(("server", "health_port"), [("keys", "keys_health"), ("ledger", "ledger_health")])
def test_the_plaintext_health_port_serves_health_and_nothing_else(stack: Stack, server: str, health_port: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports[health_port]}") as channel:
        resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        if server == "ledger":
            assert code_of(lambda: deposit(channel, "partner:x", "mtls-plain", 1)) == grpc.StatusCode.UNAUTHENTICATED
        else:
            keys = keys_pb2_grpc.KeysServiceStub(channel)
            assert code_of(
                lambda: keys.AuthenticateKey(keys_pb2.AuthenticateKeyRequest(key_hash="0" * 64), timeout=TIMEOUT)
            ) == (grpc.StatusCode.UNAUTHENTICATED)
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        listing = reflection_pb2.ServerReflectionRequest(list_services="")
        assert code_of(lambda: list(reflection.ServerReflectionInfo(iter([listing]), timeout=TIMEOUT))) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    # over mTLS, health and reflection answer any of our services
    with as_service(stack, f"127.0.0.1:{stack.ports[server]}", "worker") as channel:
        resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        answers = list(
            reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter([listing]), timeout=TIMEOUT)
        )
        names = {s.name for s in answers[0].list_services_response.service}
        assert f"creditgate.{server}.v1.{'KeysService' if server == 'keys' else 'LedgerService'}" in names


def test_a_service_with_only_part_of_its_tls_settings_refuses_to_start(stack: Stack, tmp_path: Path) -> None:
    assert stack.certs_dir is not None
    env = tls_env(stack.certs_dir, "ledger")
    partial = {"CG_TLS_CA_FILE": env["CG_TLS_CA_FILE"], "CG_LEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'l.db'}"}
    done = subprocess.run(
        [sys.executable, "-m", "cg_ledger"],
        env={k: v for k, v in os.environ.items() if not k.startswith("CG_")} | partial,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "CG_TLS_CERT_FILE" in done.stderr and "CG_TLS_KEY_FILE" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_container_health_check_shows_its_own_certificate(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    assert stack.certs_dir is not None
    for name in ("CG_TLS_CA_FILE", "CG_TLS_CERT_FILE", "CG_TLS_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert not check_grpc(stack.keys_addr, timeout_s=TIMEOUT)  # plaintext on the TLS port
    assert check_grpc(f"127.0.0.1:{stack.ports['keys_health']}", timeout_s=TIMEOUT)  # the probe port
    for name, value in tls_env(stack.certs_dir, "keys").items():
        monkeypatch.setenv(name, value)
    assert check_grpc(stack.keys_addr, timeout_s=TIMEOUT)
    assert check_grpc(stack.ledger_addr, timeout_s=TIMEOUT)  # health answers any of our services

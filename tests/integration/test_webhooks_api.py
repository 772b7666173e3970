"""The webhook routes in-process (the BFF app with its lifespan, a real nats-server, a fake
authenticator), on SQLite and PostgreSQL, with private targets NOT allowed (production's
setting): an endpoint is registered with a secret shown once and kept sealed; a loopback,
private or link-local URL is refused; reads for viewers, changes for writers; another
partner's ids are 404; a retried create or rotation converges; a redeliver and a test
publish a job; the internal gRPC service answers only with the token."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Iterator

import grpc
import pytest
from fastapi import Request
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from cg_bff.app import create_app
from cg_bff.backends import Backends
from cg_bff.principal import Principal
from cg_bff.settings import Settings
from cg_devstack import Stack, StackConfig
from cglib import natsx
from cglib.db import sync_url
from creditgate.bff.v1 import bff_pb2, bff_pb2_grpc

HEADER = "X-Test-Principal"
TOKEN = "internal-" + secrets.token_urlsafe(8)
KEY = base64.b64encode(secrets.token_bytes(32)).decode()
PUBLIC_URL = "https://93.184.216.34/hooks/creditgate"  # a public address: no DNS needed

PRINCIPALS = {
    "a-owner": Principal(kind="partner", via="session", user_id="u1", partner_id="pa", role="owner"),
    "a-viewer": Principal(kind="partner", via="session", user_id="u2", partner_id="pa", role="viewer"),
    "a-read-token": Principal(kind="partner", via="token", partner_id="pa", scope="read", token_id="t1"),
    "a-write-token": Principal(kind="partner", via="token", partner_id="pa", scope="write", token_id="t2"),
    "b-owner": Principal(kind="partner", via="session", user_id="u3", partner_id="pb", role="owner"),
    "a-customer": Principal(kind="customer", via="session", user_id="u4", partner_id="pa", customer_id="c1"),
    "admin": Principal(kind="admin", via="session", user_id="u5"),
}


class FakeAuth:
    async def authenticate(self, request: Request) -> Principal | None:
        name = request.headers.get(HEADER)
        return PRINCIPALS.get(name) if name else None


@pytest.fixture(scope="module")
def nats(tmp_path_factory) -> Iterator[Stack]:
    with Stack(StackConfig(var_dir=tmp_path_factory.mktemp("nats"), services=("nats",))) as stack:
        yield stack


@pytest.fixture
def bff(db_url, nats) -> Iterator[TestClient]:
    settings = Settings(
        database_url=db_url,
        nats_url=nats.nats_url,
        grpc_port=0,
        webhooks_allow_private=False,
        internal_token=TOKEN,
        webhook_secret_keys=KEY,
        webhooks_max_endpoints=3,
    )
    backends = Backends(keys=None, ledger=None, ledger_admin=None)  # type: ignore[arg-type]  # unused here
    with TestClient(create_app(settings, backends=backends)) as client:
        client.app.state.bff.auth = FakeAuth()  # type: ignore[attr-defined]
        client.db_url = db_url  # type: ignore[attr-defined]
        yield client


def call(client: TestClient, who: str, method: str, path: str, **kwargs):
    headers = {HEADER: who, **kwargs.pop("headers", {})}
    return client.request(method, f"/api/v1/partner/webhooks{path}", headers=headers, **kwargs)


def create(client: TestClient, who: str = "a-owner", key: str | None = None, **body):
    body = {"url": PUBLIC_URL, "event_types": ["key.exhausted", "customer_key.created"], **body}
    return call(client, who, "POST", "", json=body, headers={"Idempotency-Key": key or secrets.token_hex(8)})


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://10.0.0.8/hook",
        "https://192.168.0.10/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[fe80::1]/hook",
        "https://[fd00::1]/hook",
        "http://93.184.216.34/hook",  # https only
    ],
)
def test_a_non_public_or_plain_http_url_is_refused_at_registration(bff, url):
    r = create(bff, url=url)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "unsafe_url" and "url" in error["fields"]
    assert call(bff, "a-owner", "GET", "").json()["data"] == []
    made = create(bff).json()["endpoint"]
    r = call(bff, "a-owner", "PATCH", f"/{made['id']}", json={"url": url})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsafe_url"


def test_an_endpoint_is_made_with_a_secret_shown_once_and_kept_sealed(bff):
    r = create(bff, key="create-1", description="billing")
    assert r.status_code == 201, r.text
    body = r.json()
    secret, ep = body["secret"], body["endpoint"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert ep["event_types"] == ["customer_key.created", "key.exhausted"] and ep["enabled"] is True
    # a retry of the same create: the same endpoint, no secret
    again = create(bff, key="create-1", description="billing")
    assert again.status_code == 200 and again.json()["secret"] is None and again.json()["replayed"] is True
    assert again.json()["endpoint"]["id"] == ep["id"]
    # the same key for another request is refused, and makes nothing
    other = create(bff, key="create-1", description="something else")
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    # reads never show it
    assert "secret" not in call(bff, "a-viewer", "GET", f"/{ep['id']}").json()
    assert [e["id"] for e in call(bff, "a-read-token", "GET", "").json()["data"]] == [ep["id"]]
    # sealed in the database: the secret is not there as given
    engine = create_engine(sync_url(bff.db_url))  # type: ignore[attr-defined]
    with engine.connect() as conn:
        sealed = conn.execute(
            text("SELECT secret_sealed FROM webhook_endpoints WHERE id = :i"), {"i": ep["id"]}
        ).scalar()
    engine.dispose()
    assert sealed.startswith("v1.") and secret not in sealed and secret[6:] not in sealed


def test_reads_for_everyone_of_the_partner_changes_for_writers_only(bff):
    ep = create(bff).json()["endpoint"]
    for who in ("a-viewer", "a-read-token"):
        assert create(bff, who).status_code == 403
        assert call(bff, who, "PATCH", f"/{ep['id']}", json={"enabled": False}).status_code == 403
        assert call(bff, who, "DELETE", f"/{ep['id']}").status_code == 403
        assert call(bff, who, "POST", f"/{ep['id']}/test").status_code == 403
        assert call(bff, who, "GET", f"/{ep['id']}/deliveries").status_code == 200
    for who in ("a-customer", "admin"):
        assert call(bff, who, "GET", "").status_code == 403
    assert call(bff, "", "GET", "").status_code == 401
    r = call(bff, "a-write-token", "PATCH", f"/{ep['id']}", json={"enabled": False, "description": "off"})
    assert r.status_code == 200 and r.json()["enabled"] is False and r.json()["description"] == "off"


def test_another_partners_endpoint_is_not_found(bff):
    ep = create(bff).json()["endpoint"]
    paths = [
        ("GET", f"/{ep['id']}"),
        ("PATCH", f"/{ep['id']}"),
        ("DELETE", f"/{ep['id']}"),
        ("GET", f"/{ep['id']}/deliveries"),
        ("POST", f"/{ep['id']}/test"),
        ("POST", f"/{ep['id']}/rotate-secret"),
        ("POST", f"/{ep['id']}/deliveries/whd_x/redeliver"),
        ("GET", f"/{ep['id']}/deliveries/whd_x"),
    ]
    for method, path in paths:
        body = {"json": {"enabled": False}} if method == "PATCH" else {}
        r = call(bff, "b-owner", method, path, headers={"Idempotency-Key": "k"}, **body)
        assert r.status_code == 404, (method, path, r.text)
    assert call(bff, "b-owner", "GET", "").json()["data"] == []
    assert call(bff, "a-owner", "GET", f"/{ep['id']}").json()["enabled"] is True  # untouched


def test_bad_bodies_are_refused_with_their_fields(bff):
    r = create(bff, event_types=["key.exploded"])
    assert r.status_code == 400 and "event_types.0" in r.json()["error"]["fields"]
    assert create(bff, event_types=[]).status_code == 400
    assert create(bff, colour="blue").status_code == 400
    r = call(bff, "a-owner", "POST", "", json={"url": PUBLIC_URL, "event_types": ["key.exhausted"]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "idempotency_key_required"
    ep = create(bff).json()["endpoint"]
    assert call(bff, "a-owner", "PATCH", f"/{ep['id']}", json={"url": None}).status_code == 400


def test_a_partner_may_register_a_bounded_number_of_endpoints(bff):
    for _ in range(3):
        assert create(bff).status_code == 201
    r = create(bff)
    assert r.status_code == 409 and "at most 3" in r.json()["error"]["message"]
    assert create(bff, "b-owner").status_code == 201  # per partner


def test_rotation_shows_a_new_secret_once_and_keeps_the_old_one_signing_for_a_while(bff):
    made = create(bff).json()
    ep, first = made["endpoint"], made["secret"]
    r = call(bff, "a-owner", "POST", f"/{ep['id']}/rotate-secret", json={"keep_previous_s": 3600},
             headers={"Idempotency-Key": "rot-1"})  # fmt: skip
    assert r.status_code == 200, r.text
    second = r.json()["secret"]
    assert second.startswith("whsec_") and second != first
    assert r.json()["endpoint"]["previous_secret_expires_at"] is not None
    replay = call(bff, "a-owner", "POST", f"/{ep['id']}/rotate-secret", json={"keep_previous_s": 3600},
                  headers={"Idempotency-Key": "rot-1"})  # fmt: skip
    assert replay.json()["secret"] is None and replay.json()["replayed"] is True
    reused = call(bff, "a-owner", "POST", f"/{ep['id']}/rotate-secret", headers={"Idempotency-Key": "rot-1"})
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "idempotency_key_reused"
    r = call(bff, "a-owner", "POST", f"/{ep['id']}/rotate-secret", json={"keep_previous_s": 0},
             headers={"Idempotency-Key": "rot-2"})  # fmt: skip
    assert r.json()["secret"] not in (first, second) and r.json()["endpoint"]["previous_secret_expires_at"] is None
    assert call(bff, "a-owner", "POST", f"/{ep['id']}/rotate-secret").status_code == 400  # Idempotency-Key


def test_delete_removes_the_endpoint(bff):
    ep = create(bff).json()["endpoint"]
    assert call(bff, "a-owner", "DELETE", f"/{ep['id']}").status_code == 204
    assert call(bff, "a-owner", "GET", f"/{ep['id']}").status_code == 404
    assert call(bff, "a-owner", "DELETE", f"/{ep['id']}").status_code == 404


async def _jobs(nats_url: str, want: int) -> list[tuple[str, bff_pb2.WebhookJob]]:
    nc = await natsx.connect(nats_url, "test")
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(natsx.WEBHOOK_JOBS_FILTER, stream=natsx.WEBHOOKS_STREAM)
        msgs = []
        while True:  # every job in the stream (the server is shared by the module's tests)
            try:
                msgs += await sub.fetch(100, timeout=1)
            except TimeoutError:
                break
        return [(m.headers.get("Nats-Msg-Id", ""), bff_pb2.WebhookJob.FromString(m.data)) for m in msgs]
    finally:
        await nc.close()


def _grpc(port: int, method: str, request, token: str | None):
    async def go():
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = bff_pb2_grpc.WebhookServiceStub(ch)
            metadata = (("x-cg-internal-token", token),) if token else ()
            return await getattr(stub, method)(request, timeout=5, metadata=metadata)

    return asyncio.run(go())


def test_a_test_event_and_a_redeliver_publish_jobs_and_the_worker_service_needs_the_token(bff, nats):
    made = create(bff).json()
    ep = made["endpoint"]
    r = call(bff, "a-owner", "POST", f"/{ep['id']}/test")
    assert r.status_code == 202, r.text
    delivery = r.json()
    assert delivery["event_type"] == "webhook.test" and delivery["state"] == "pending"
    assert "." not in delivery["event_id"]
    port = bff.app.state.bff.extras["grpc_port"]  # type: ignore[attr-defined]
    claim_request = bff_pb2.ClaimDeliveryRequest(
        delivery_id=delivery["id"], partner_id="pa", generation=0, lease_ms=30_000
    )
    # the secrets are only for the worker's token
    for token in (None, "wrong"):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            _grpc(port, "ClaimDelivery", claim_request, token)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # another partner's delivery is nothing to it
    other = bff_pb2.ClaimDeliveryRequest(delivery_id=delivery["id"], partner_id="pb", generation=0, lease_ms=30_000)
    assert _grpc(port, "ClaimDelivery", other, TOKEN).outcome == bff_pb2.CLAIM_OUTCOME_SKIP
    claim = _grpc(port, "ClaimDelivery", claim_request, TOKEN)
    assert claim.outcome == bff_pb2.CLAIM_OUTCOME_CLAIMED
    assert list(claim.delivery.secrets) == [made["secret"]] and claim.delivery.url == PUBLIC_URL
    # a second claim while the first holds the lease: busy
    assert _grpc(port, "ClaimDelivery", claim_request, TOKEN).outcome == bff_pb2.CLAIM_OUTCOME_BUSY
    dead = bff_pb2.RecordAttemptRequest(
        delivery_id=delivery["id"],
        partner_id="pa",
        generation=0,
        attempt=1,
        outcome=bff_pb2.ATTEMPT_OUTCOME_DEAD,
        status_code=500,
        error="HTTP 500",
    )
    assert _grpc(port, "RecordAttempt", dead, TOKEN).state == bff_pb2.DELIVERY_STATE_DEAD
    listed = call(bff, "a-viewer", "GET", f"/{ep['id']}/deliveries", params={"state": "dead"}).json()["data"]
    assert [d["id"] for d in listed] == [delivery["id"]] and listed[0]["last_status_code"] == 500
    # redeliver: the next generation, pending, published again
    r = call(bff, "a-owner", "POST", f"/{ep['id']}/deliveries/{delivery['id']}/redeliver")
    assert r.status_code == 202 and r.json()["state"] == "pending" and r.json()["generation"] == 1
    jobs = asyncio.run(_jobs(nats.nats_url, 2))
    ids = [(msg_id, job.delivery_id, job.generation) for msg_id, job in jobs if job.delivery_id == delivery["id"]]
    assert ids == [(f"{delivery['id']}:0", delivery["id"], 0), (f"{delivery['id']}:1", delivery["id"], 1)]
    # the old generation's job is skipped; the new one is claimed
    assert _grpc(port, "ClaimDelivery", claim_request, TOKEN).outcome == bff_pb2.CLAIM_OUTCOME_SKIP
    claim_request.generation = 1
    assert _grpc(port, "ClaimDelivery", claim_request, TOKEN).outcome == bff_pb2.CLAIM_OUTCOME_CLAIMED
    detail = call(bff, "a-owner", "GET", f"/{ep['id']}/deliveries/{delivery['id']}").json()
    assert detail["payload"]["type"] == "webhook.test" and detail["payload"]["id"] == delivery["event_id"]
    assert [(a["generation"], a["attempt"], a["outcome"]) for a in detail["attempt_log"]] == [(0, 1, "dead")]

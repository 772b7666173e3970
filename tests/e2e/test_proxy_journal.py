"""Nothing answered is ever unbilled, and the proxy's worker processes each bill their own.

- A proxy killed with SIGKILL right after answering requests whose settlement never left
  it (held back by the ``settle:before_send`` hold point): a new proxy on the same files
  settles every one of them from its journal, exactly once, and publishes one usage event
  per request.
- The journal of a worker slot that no longer exists (the proxy restarted with fewer
  workers) is adopted and settled by a live worker.
- A proxy with ``CG_PROXY_WORKERS=2``: both worker processes answer, each journals what it
  answered, and the ledger's charges are the sum of the responses' usage.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cg_devstack import Stack, StackConfig
from cg_devstack.seed import Seeder
from cglib import natsx
from creditgate.ledger.v1 import ledger_pb2
from helpers import eventually, expected_cost_ucr, usage_events

MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def stack():
    with tempfile.TemporaryDirectory(prefix="cg-journal-") as var:
        config = StackConfig(var_dir=Path(var), services=("nats", "keys", "ledger", "mock"))
        with Stack(config) as s:
            yield s


@pytest.fixture(scope="module")
def seeder(stack: Stack):
    s = Seeder(stack.keys_addr, stack.ledger_addr)
    yield s
    s.close()


def balance(seeder: Seeder, account: str) -> ledger_pb2.GetBalanceResponse:
    return seeder.ledger.GetBalance(ledger_pb2.GetBalanceRequest(account=account), timeout=5)


def chat(url: str, secret: str, text: str, stream: bool = False) -> tuple[str, int]:
    """One request on a connection of its own: its request id and the cost of its usage."""
    body: dict = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": text}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    headers = {"Authorization": f"Bearer {secret}", "Connection": "close"}
    resp = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text
    if stream:
        chunks = [orjson.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]
        usage = next(c["usage"] for c in chunks if c.get("usage"))
    else:
        usage = resp.json()["usage"]
    return resp.headers["x-request-id"], expected_cost_ucr(MODEL, usage["prompt_tokens"], usage["completion_tokens"])


def answered_ids(journal: Path) -> set[str]:
    lines = [orjson.loads(line) for line in journal.read_bytes().splitlines()]
    return {entry["a"] for entry in lines if "a" in entry}


@pytest.mark.parametrize("leases", [False, True], ids=["reserved", "leased"])
def test_requests_answered_by_a_killed_proxy_are_billed_once_after_restart(stack: Stack, seeder: Seeder, leases):
    """With leases the killed proxy held a lease too: the restarted one settles the journal
    from it, then releases it, so nothing stays held until the lease's expiry."""
    run = "leased" if leases else "reserved"
    key = seeder.funded_key(seeder.partner(f"journal-kill-{run}", credits=100), 10, [MODEL])
    before = balance(seeder, key.account)
    files = {
        "CG_PROXY_OUTBOX_PATH": str(stack.var / f"killed-{run}-outbox.sqlite3"),
        "CG_PROXY_JOURNAL_PATH": str(stack.var / f"killed-{run}-journal.log"),
        "CG_PROXY_LEASES": "1" if leases else "0",
    }
    held, url = stack.start_replica("proxy", f"proxy-held-{run}", {**files, "CG_HOLD_AT": "settle:before_send"})
    answered = [chat(url, key.secret, f"request {i}", stream=i % 2 == 1) for i in range(6)]
    ids = [request_id for request_id, _ in answered]
    cost = sum(c for _, c in answered)

    # every request answered, none settled: the holds are all still pending
    now = balance(seeder, key.account)
    assert now.posted_ucr == before.posted_ucr and now.pending_ucr > 0
    assert answered_ids(Path(files["CG_PROXY_JOURNAL_PATH"])) == set(ids)
    journaled = [orjson.loads(line) for line in Path(files["CG_PROXY_JOURNAL_PATH"]).read_bytes().splitlines()]
    assert all(bool(entry.get("lease")) == leases for entry in journaled if "a" in entry)  # from a lease, or not
    held.kill()  # SIGKILL: no drain, no outbox write, nothing in memory survives

    stack.start_replica("proxy", f"proxy-after-{run}", files)  # settles the journal at start

    def settled() -> bool:
        b = balance(seeder, key.account)
        return b.pending_ucr == 0 and before.posted_ucr - b.posted_ucr == cost

    eventually(settled, timeout_s=30, what="every answered request billed")
    subject = natsx.usage_subject(key.partner_id, key.key_id)
    eventually(lambda: len(usage_events(stack, subject)) >= len(ids), timeout_s=30, what="the usage events")
    events = usage_events(stack, subject)
    assert sorted(e.request_id for e in events) == sorted(ids), "one event per request, none missing, none twice"
    assert sum(e.charged_ucr for e in events) == cost
    assert balance(seeder, key.account).posted_ucr == before.posted_ucr - cost  # exactly once
    # settled and published: the journal holds nothing open any more (compacted at the next start)
    eventually(
        lambda: (
            not (answered_ids(Path(files["CG_PROXY_JOURNAL_PATH"])) - done_ids(Path(files["CG_PROXY_JOURNAL_PATH"])))
        ),
        what="the journal's entries done",
    )


def done_ids(journal: Path) -> set[str]:
    lines = [orjson.loads(line) for line in journal.read_bytes().splitlines()]
    return {entry["d"] for entry in lines if "d" in entry}


def test_the_journal_of_a_worker_slot_no_longer_run_is_adopted(stack: Stack, seeder: Seeder):
    """Requests answered by a killed worker of slot 1; the proxy restarts with one worker,
    which settles them from slot 1's journal and removes it."""
    key = seeder.funded_key(seeder.partner("journal-adopt", credits=100), 10, [MODEL])
    before = balance(seeder, key.account)
    base = {
        "CG_PROXY_OUTBOX_PATH": str(stack.var / "adopt-outbox.sqlite3"),
        "CG_PROXY_JOURNAL_PATH": str(stack.var / "adopt-journal.log"),
    }
    # slot 0 is held by a first proxy, so the held one takes slot 1 (as a second worker would)
    first, _ = stack.start_replica("proxy", "proxy-slot0", base)
    held, url = stack.start_replica("proxy", "proxy-slot1", {**base, "CG_HOLD_AT": "settle:before_send"})
    slot1 = stack.var / "adopt-journal.w1.log"
    answered = [chat(url, key.secret, f"adopted {i}") for i in range(3)]
    assert answered_ids(slot1) == {request_id for request_id, _ in answered}
    held.kill()
    first.stop()

    stack.start_replica("proxy", "proxy-one-worker", {**base, "CG_PROXY_WORKERS": "1"})
    cost = sum(c for _, c in answered)
    eventually(
        lambda: (
            before.posted_ucr - balance(seeder, key.account).posted_ucr == cost
            and balance(seeder, key.account).pending_ucr == 0
        ),
        timeout_s=30,
        what="the adopted requests billed",
    )
    assert not slot1.exists()


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``, in an exposition."""
    total, found = 0.0, False
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total, found = total + s.value, True
    assert found, f"{name}{labels} not exported"
    return total


def test_two_worker_processes_both_answer_and_bill(stack: Stack, seeder: Seeder):
    key = seeder.funded_key(seeder.partner("two-workers", credits=100), 10, [MODEL])
    before = balance(seeder, key.account)
    base = stack.var / "workers-journal.log"
    proc, url = stack.start_replica(
        "proxy",
        "proxy-workers",
        {"CG_PROXY_WORKERS": "2", "CG_PROXY_JOURNAL_PATH": str(base)},
    )
    journals = (base, stack.var / "workers-journal.w1.log")
    # each worker says so once its start-up is done (the shared socket's accepts are its from then on)
    eventually(lambda: proc.log_text().count('"msg": "proxy ready"') == 2, timeout_s=30, what="both workers ready")
    answered: list[tuple[str, int]] = []
    with ThreadPoolExecutor(8) as pool:  # concurrent connections: a busy worker leaves the next to the other
        for _ in range(5):  # the kernel does not balance a shared socket's accepts: rounds until both took some
            n = len(answered)
            answered += pool.map(lambda i: chat(url, key.secret, f"worker {i}", stream=i % 3 == 0), range(n, n + 24))
            by_worker = [answered_ids(j) for j in journals]
            if all(by_worker):
                break
    ids = {request_id for request_id, _ in answered}
    assert len(ids) == len(answered)
    assert all(by_worker), f"a worker answered nothing: {[len(w) for w in by_worker]}"
    assert by_worker[0] | by_worker[1] == ids and not by_worker[0] & by_worker[1]

    cost = sum(c for _, c in answered)

    def settled() -> bool:
        b = balance(seeder, key.account)
        return b.pending_ucr == 0 and before.posted_ucr - b.posted_ucr == cost

    eventually(settled, timeout_s=30, what="the ledger's charges = the responses' usage")
    subject = natsx.usage_subject(key.partner_id, key.key_id)
    eventually(lambda: len(usage_events(stack, subject)) >= len(ids), what="the usage events")
    assert sorted(e.request_id for e in usage_events(stack, subject)) == sorted(ids)

    # /metrics of whichever worker answers the scrape: the sum of both (multiprocess mode)
    metrics_dir = stack.var / f"proxy-metrics-{url.rsplit(':', 1)[1]}"
    pids = {f.stem.rsplit("_", 1)[1] for f in metrics_dir.glob("counter_*.db")}
    assert len(pids) >= 2, f"one counter file per worker process: {sorted(pids)}"
    for _ in range(6):  # a new connection each: the scrapes land on either worker
        text = httpx.get(f"{url}/metrics", headers={"Connection": "close"}, timeout=10).text
        assert sample(text, "cg_proxy_requests_total", path="/v1/chat/completions", status="200") == len(ids)
        assert sample(text, "cg_proxy_settlements_total", outcome="ok") == len(ids)
        assert sample(text, "cg_proxy_background_tasks") == 0
    assert proc.stop() in (0, -15)

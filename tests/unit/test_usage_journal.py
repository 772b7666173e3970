"""The proxy's usage journal (``cg_proxy.journal``) and worker slots (``cg_proxy.slots``):
what is answered and not done survives a reopen, a done entry does not, the file is
compacted, a torn line is skipped; slots are exclusive and orphaned files are adopted."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path

from cg_proxy import slots
from cg_proxy.collaborators import Finished
from cg_proxy.journal import Journal, read_open, requested_at_ms, stamped
from cg_proxy.outbox import Outbox
from cg_proxy.token_usage import Usage
from cg_proxy.usage_recorder import UsageRecorder
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2
from creditgate.ledger.v1 import ledger_pb2


def finished(request_id: str) -> Finished:
    key = keys_pb2.Key(id="key_1", partner_id="p_1")
    key.billing.price_per_ai_credit_cents = "1.5"
    return stamped(
        Finished(
            request_id,
            key,
            "cust_1",
            "gpt-4o-mini",
            Usage(12, 34, ledger_pb2.USAGE_SOURCE_PROVIDER),
            events_pb2.USAGE_OUTCOME_OK,
            0.0,
            True,
        )
    )


def test_a_replayed_request_says_when_it_came_in(tmp_path: Path):
    """A leased request settled after a restart is counted in its key's rate window from
    when it came in: its answer's time less its latency, both journaled."""
    path = tmp_path / "journal.log"
    Journal(path).answered(finished("req_a"))
    (replayed,) = Journal(path).unsettled()
    assert replayed.time_unix_ms is not None and replayed.latency_ms is not None
    assert requested_at_ms(replayed) == replayed.time_unix_ms - replayed.latency_ms > 0
    assert requested_at_ms(replace(finished("req_b"), latency_ms=None)) == 0  # not known: from the settlement


def test_what_is_answered_and_not_done_is_there_after_a_reopen(tmp_path: Path):
    path = tmp_path / "journal.log"
    journal = Journal(path)
    journal.answered(finished("req_a"))
    journal.answered(finished("req_b"))
    journal.done("req_a")
    journal.done("req_unknown")  # nothing to do
    # no close(): as after a SIGKILL, only what reached the kernel counts
    (replayed,) = Journal(path).unsettled()
    original = finished("req_b")
    assert replayed.request_id == "req_b"
    assert (replayed.key.id, replayed.key.partner_id, replayed.key.billing.price_per_ai_credit_cents) == (
        "key_1",
        "p_1",
        "1.5",
    )
    assert (replayed.customer_id, replayed.model, replayed.usage, replayed.outcome, replayed.stream) == (
        "cust_1",
        "gpt-4o-mini",
        Usage(12, 34, ledger_pb2.USAGE_SOURCE_PROVIDER),
        events_pb2.USAGE_OUTCOME_OK,
        True,
    )
    assert replayed.latency_ms is not None and replayed.time_unix_ms is not None
    assert abs(replayed.time_unix_ms - (original.time_unix_ms or 0)) < 60_000


def test_the_journal_is_compacted_to_its_open_entries(tmp_path: Path):
    path = tmp_path / "journal.log"
    journal = Journal(path, compact_every=100)
    for i in range(1000):
        journal.answered(finished(f"req_{i}"))
        if i != 7:
            journal.done(f"req_{i}")
    assert len(path.read_bytes().splitlines()) < 100
    assert list(read_open(path)) == ["req_7"]
    journal.close()
    reopened = Journal(path)  # compacted at start too
    assert len(path.read_bytes().splitlines()) == 1 and reopened.open_count == 1


def test_a_torn_line_is_skipped(tmp_path: Path):
    path = tmp_path / "journal.log"
    journal = Journal(path)
    journal.answered(finished("req_ok"))
    journal.close()
    with open(path, "ab") as f:
        f.write(b'{"a": "req_torn", "key"')
    assert [f.request_id for f in Journal(path).unsettled()] == ["req_ok"]


def test_slots_are_exclusive_and_the_lowest_free_one_is_taken(tmp_path: Path):
    outbox, journal = tmp_path / "outbox.sqlite3", tmp_path / "journal.log"
    first = slots.claim(outbox, journal)
    second = slots.claim(outbox, journal)
    assert (first.index, second.index) == (0, 1)
    assert (first.journal_path, second.journal_path) == (journal, tmp_path / "journal.w1.log")
    assert second.outbox_path == tmp_path / "outbox.w1.sqlite3"
    first.release()  # its process died: the next worker takes its slot (and replays its files)
    assert slots.claim(outbox, journal).index == 0


async def test_the_files_of_a_slot_beyond_the_workers_are_adopted(tmp_path: Path):
    outbox_base, journal_base = tmp_path / "outbox.sqlite3", tmp_path / "journal.log"
    # an earlier run with three workers left slot 2's files behind
    orphan = Journal(slots.slot_path(journal_base, 2))
    orphan.answered(finished("req_orphan"))
    orphan.close()
    orphan_outbox = Outbox(slots.slot_path(outbox_base, 2))
    await orphan_outbox.put("req_event", "usage.p_1.key_1", b"payload")
    await orphan_outbox.put("req_dead", "nostream.p_1", b"refused")  # and a dead letter: kept too
    await orphan_outbox.dead_letter((await orphan_outbox.oldest())[1], 8, ValueError("refused for good"))
    orphan_outbox.close()

    slot = slots.claim(outbox_base, journal_base)
    journal, outbox = Journal(slot.journal_path), Outbox(slot.outbox_path)
    busy = slots.claim(outbox_base, journal_base)  # slot 1, a live worker of this run: not adopted
    taken = await slots.adopt(outbox_base, journal_base, 2, slot, journal, outbox)
    assert taken == 1
    assert [f.request_id for f in journal.unsettled()] == ["req_orphan"]
    assert [e.request_id for e in await outbox.oldest()] == ["req_event"]
    assert [(d[0], d[4], d[5]) for d in await outbox.dead_letters()] == [
        ("req_dead", 8, "ValueError: refused for good")
    ]
    assert outbox.dead == 1
    assert not slots.slot_path(journal_base, 2).exists() and not slots.slot_path(outbox_base, 2).exists()
    assert busy.index == 1
    outbox.close()
    with sqlite3.connect(slot.outbox_path) as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1


class HeldLedger:
    """Settles only once ``open`` is set; counts the settlements by request id."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.settled: list[str] = []

    async def release_lease(self, lease_id: str) -> None:
        pass

    def lease_of(self, request_id: str) -> None:
        return None

    async def settle(self, request_id: str, usage: Usage, lease=None, requested_at_ms=0) -> ledger_pb2.SettleResponse:
        await self.open.wait()
        self.settled.append(request_id)
        return ledger_pb2.SettleResponse(request_id=request_id, charged_ucr=42, price_book_version="v1")


async def test_the_recorder_journals_before_returning_and_settles_the_journal_at_start(tmp_path: Path):
    from test_proxy_outbox import FakeBus, Publisher

    journal_path = tmp_path / "journal.log"
    ledger, publish = HeldLedger(), Publisher()
    outbox = Outbox(tmp_path / "o.sqlite3")
    recorder = UsageRecorder(ledger, FakeBus(publish), outbox, Journal(journal_path))
    recorder.record(finished("req_1"))
    assert list(read_open(journal_path)) == ["req_1"]  # on disk when record() returns
    await recorder.drain(0.05)  # stopped with the settlement still held: the entry stays open
    assert ledger.settled == [] and list(read_open(journal_path)) == ["req_1"]

    ledger.open.set()
    restarted = UsageRecorder(ledger, FakeBus(publish), outbox, Journal(journal_path))
    restarted.start()
    await restarted.drain(2)
    assert ledger.settled == ["req_1"] and [m for _, _, m in publish.sent] == ["req_1"]
    assert read_open(journal_path) == {}
    outbox.close()

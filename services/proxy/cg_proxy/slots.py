"""Which local files a proxy worker process owns: its slot.

Every worker process (``CG_PROXY_WORKERS`` of them, see ``__main__``) has an outbox and a
journal of its own (``Outbox``, ``Journal``: neither is shared between processes). Slot
``i`` owns ``outbox_path`` and ``journal_path`` as configured for ``i = 0`` and
``<stem>.w<i><suffix>`` beside them otherwise (``proxy-outbox.w1.sqlite3``), and holds an
exclusive ``flock`` on ``<journal>.lock`` for as long as it lives: the kernel releases it
when the process dies, however it dies. A starting worker takes the lowest slot whose
lock is free, so a worker restarted after a crash takes the slot, and the files, of the
one that died, and replays them.

When the proxy restarts with fewer workers, the files of slots ``>= workers`` would have
no owner: ``adopt`` lets a live worker take them over (under their lock, so two workers
never take the same ones): their unsettled journal entries are appended to its own
journal and their events put in its own outbox, then the files are removed. A crash
half-way leaves them to be adopted again; whatever is then taken twice is settled and
published twice, which the ledger and JetStream deduplicate by request id.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cg_proxy.journal import Journal, read_open
from cg_proxy.outbox import Outbox

log = logging.getLogger(__name__)


def slot_path(base: str | Path, index: int) -> Path:
    """Slot ``index``'s file of a kind whose slot-0 file is ``base``."""
    base = Path(base)
    return base if index == 0 else base.with_name(f"{base.stem}.w{index}{base.suffix}")


def _lock_path(journal_base: str | Path, index: int) -> Path:
    path = slot_path(journal_base, index)
    return path.with_name(path.name + ".lock")


def _try_lock(path: Path) -> BinaryIO | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(path, "ab")  # noqa: SIM115 -- held open: the lock lives as long as the file is open
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


@dataclass
class Slot:
    index: int
    outbox_path: Path
    journal_path: Path
    _lock: BinaryIO

    def release(self) -> None:
        self._lock.close()


def claim(outbox_base: str | Path, journal_base: str | Path) -> Slot:
    """The lowest slot no live process holds, held by this one until ``release`` (or death)."""
    for index in itertools.count():
        lock = _try_lock(_lock_path(journal_base, index))
        if lock is not None:
            return Slot(index, slot_path(outbox_base, index), slot_path(journal_base, index), lock)
    raise AssertionError("unreachable")


def _indexes(base: Path) -> set[int]:
    """The slots ``> 0`` that have a file of this kind (or its lock) beside ``base``."""
    pattern = re.compile(re.escape(base.stem) + r"\.w(\d+)" + re.escape(base.suffix) + r"(\.lock)?$")
    if not base.parent.is_dir():
        return set()
    return {int(m.group(1)) for p in base.parent.iterdir() if (m := pattern.match(p.name))}


async def adopt(
    outbox_base: str | Path, journal_base: str | Path, workers: int, slot: Slot, journal: Journal, outbox: Outbox
) -> int:
    """Takes over the files of slots ``>= workers`` that no live process holds: their
    unsettled journal entries into ``journal``, their events into ``outbox``. Returns how
    many journal entries were taken (their settlement is the recorder's, at its start)."""
    outbox_base, journal_base = Path(outbox_base), Path(journal_base)
    taken = 0
    for index in sorted(_indexes(journal_base) | _indexes(outbox_base)):
        if index < workers or index == slot.index:
            continue
        lock = _try_lock(_lock_path(journal_base, index))
        if lock is None:  # a live process holds it
            continue
        try:
            entries = read_open(slot_path(journal_base, index))
            journal.take(entries)
            taken += len(entries)
            events = _outbox_rows(slot_path(outbox_base, index))
            for request_id, subject, payload in events:
                await outbox.put(request_id, subject, payload)
            for row in _dead_letter_rows(slot_path(outbox_base, index)):
                await outbox.put_dead(row)
            _remove(slot_path(journal_base, index), slot_path(outbox_base, index))
            if entries or events:
                log.info(
                    "adopted the files of a worker slot no longer in use",
                    extra={"slot": index, "journal_entries": len(entries), "outbox_events": len(events)},
                )
        finally:
            lock.close()
    return taken


def _outbox_rows(path: Path) -> list[tuple[str, str, bytes]]:
    """The events of the outbox file ``path``, oldest first."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path)) as db:
        try:
            rows = db.execute("SELECT request_id, subject, payload FROM outbox ORDER BY created_unix_ms, rowid")
            return [(r[0], r[1], bytes(r[2])) for r in rows]
        except sqlite3.OperationalError:  # no table: nothing was ever stored
            return []


def _dead_letter_rows(path: Path) -> list[tuple[str, str, bytes, int, int, str]]:
    """The dead letters of the outbox file ``path`` (``Outbox.dead_letter``), kept when it is adopted."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path)) as db:
        try:
            rows = db.execute(
                "SELECT request_id, subject, payload, created_unix_ms, attempts, reason FROM dead_letters"
            )
            return [(r[0], r[1], bytes(r[2]), r[3], r[4], r[5]) for r in rows]
        except sqlite3.OperationalError:  # an outbox from before dead letters, or never used
            return []


def _remove(journal: Path, outbox: Path) -> None:
    journal.unlink(missing_ok=True)
    for suffix in ("", "-wal", "-shm"):
        outbox.with_name(outbox.name + suffix).unlink(missing_ok=True)

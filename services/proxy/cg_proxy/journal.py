"""The usage journal: every answered request, on local disk, until its usage is settled.

The guarantee: nothing answered is ever unbilled, whatever happens to the process. A
metered request's usage (``Finished``) is appended here, one line, before the last byte
of its answer is sent (``UsageRecorder.record`` writes it synchronously: for a JSON
reply before the response starts, for a stream before the end of its body); once the
ledger has settled it and its usage event is published or in the outbox, a ``done``
line follows. At start, every entry without its ``done`` is settled again (the ledger
is idempotent by request id: a replay of one already settled returns what it charged)
and its event published (``Nats-Msg-Id`` = the request id, and consumers dedup by it).

No fsync: a ``write(2)`` of one line reaches the kernel's page cache before the client
gets its last byte, so it survives the process being killed (SIGKILL, OOM), not the
machine. What a machine loss can cost: the requests answered in the last seconds before
the loss whose settlement had not reached the ledger (settlements leave every few
milliseconds, so normally only those in flight; while the ledger is unreachable, every
request since). Their holds are not lost with them: a hold never settled is voided
when it expires (``reservation_ttl_s``, 15 minutes by default; the worker reaps expired
reservations), so the payer gets back what was held, nothing stays held longer than
that, and the loss is the provider's usage of those requests, never more than what was
reserved for them. Writing the file with ``O_APPEND`` and no
fsync costs a few microseconds per request.

The file is plain JSON lines (orjson): ``{"a": request_id, ...}`` for an answered
request, ``{"d": request_id}`` when it is done. A torn last line (a full disk) is
skipped. It is compacted (rewritten with only the open entries, then renamed over
the old one) every ``compact_every`` lines and at start, so it stays small.

One file per worker process: ``cg_proxy.slots`` gives each its own, and hands the files
of workers that no longer exist to a live one (``adopt``).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from cg_proxy.collaborators import Finished
from cg_proxy.token_usage import Usage
from creditgate.keys.v1 import keys_pb2

log = logging.getLogger(__name__)

COMPACT_EVERY = 10_000


def stamped(f: Finished) -> Finished:
    """``f`` with its latency and time fixed now (as answered), for the journal and the event alike."""
    if f.latency_ms is not None:
        return f
    return replace(f, latency_ms=int((time.perf_counter() - f.started) * 1000), time_unix_ms=int(time.time() * 1000))


def requested_at_ms(f: Finished) -> int:
    """When a stamped request came in, on the wall clock (0 if not stamped): a leased
    request settled after a restart is counted in its key's rate window from then."""
    if f.latency_ms is None or f.time_unix_ms is None:
        return 0
    return max(f.time_unix_ms - f.latency_ms, 0)


def _line(f: Finished) -> bytes:
    return (
        orjson.dumps(
            {
                "a": f.request_id,
                "key": f.key.id,
                "partner": f.key.partner_id,
                "ai_credit_cents": f.key.billing.price_per_ai_credit_cents,
                "customer": f.customer_id,
                "model": f.model,
                "in": f.usage.input_tokens,
                "out": f.usage.output_tokens,
                "source": f.usage.source,
                "outcome": f.outcome,
                "stream": f.stream,
                "ms": f.latency_ms,
                "at": f.time_unix_ms,
                "lease": f.lease,
            }
        )
        + b"\n"
    )


def _finished(entry: dict[str, Any]) -> Finished:
    key = keys_pb2.Key(id=entry["key"], partner_id=entry["partner"])
    key.billing.price_per_ai_credit_cents = entry["ai_credit_cents"]
    return Finished(
        request_id=entry["a"],
        key=key,
        customer_id=entry["customer"],
        model=entry["model"],
        usage=Usage(entry["in"], entry["out"], entry["source"]),
        outcome=entry["outcome"],
        started=0.0,
        stream=entry["stream"],
        latency_ms=entry["ms"],
        time_unix_ms=entry["at"],
        lease=tuple(entry["lease"]) if entry.get("lease") else None,
    )


def read_open(path: Path) -> dict[str, bytes]:
    """The entries of a journal file without their ``done`` line: request id -> its line."""
    entries: dict[str, bytes] = {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return entries
    for line in data.splitlines(keepends=True):
        try:
            entry = orjson.loads(line)
            if "a" in entry:
                entries[entry["a"]] = line if line.endswith(b"\n") else line + b"\n"
            else:
                entries.pop(entry["d"], None)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("unreadable journal line skipped", extra={"path": str(path), "line": line[:200]})
    return entries


class Journal:
    """This process's journal file, opened for appending; ``open_entries`` is what it holds
    that is not done (a previous run's entries included, until they are done)."""

    def __init__(self, path: str | Path, compact_every: int = COMPACT_EVERY) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.compact_every = compact_every
        self._open: dict[str, bytes] = read_open(self.path)
        self._file: BinaryIO = self._rewrite()
        self._appended = 0

    def _rewrite(self) -> BinaryIO:
        """Writes the open entries to a new file, renamed over the journal; opened for appending."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(b"".join(self._open.values()))
        os.replace(tmp, self.path)
        return open(self.path, "ab", buffering=0)  # kept open for the process's life

    def unsettled(self) -> list[Finished]:
        """The entries not done, oldest first (a previous run's, to settle at start)."""
        found = []
        for line in self._open.values():
            try:
                found.append(_finished(orjson.loads(line)))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.error("journal entry cannot be replayed", extra={"path": str(self.path), "line": line[:200]})
        return found

    def answered(self, f: Finished) -> None:
        """Appends ``f`` (stamped: ``stamped``); returns once the kernel has the line."""
        line = _line(f)
        self._file.write(line)
        self._open[f.request_id] = line
        self._appended += 1

    def take(self, entries: dict[str, bytes]) -> None:
        """Appends entries of another journal (``slots.adopt``): from now on they are this one's."""
        fresh = {rid: line for rid, line in entries.items() if rid not in self._open}
        if fresh:
            self._file.write(b"".join(fresh.values()))
            self._open.update(fresh)
            self._appended += len(fresh)

    def done(self, request_id: str) -> None:
        """Marks an entry settled and published (or in the outbox); compacts now and then."""
        if self._open.pop(request_id, None) is None:
            return
        self._file.write(orjson.dumps({"d": request_id}) + b"\n")
        self._appended += 1
        if self._appended >= self.compact_every:
            self.compact()

    def compact(self) -> None:
        self._file.close()
        self._file = self._rewrite()
        self._appended = 0

    @property
    def open_count(self) -> int:
        return len(self._open)

    def close(self) -> None:
        self._file.close()

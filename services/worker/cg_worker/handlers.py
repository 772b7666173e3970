"""Which rules each stream's events trigger. A batch is reduced to the distinct keys
and partners it names, so a burst of events costs one check each."""

from __future__ import annotations

import logging

from cg_worker.metrics import CHARGED
from cg_worker.rules import DEPOSIT_LINE, Rules
from creditgate.events.v1 import events_pb2

log = logging.getLogger("cg_worker.usage")


class Handlers:
    def __init__(self, rules: Rules) -> None:
        self.rules = rules

    async def usage(self, events: list[events_pb2.UsageEvent]) -> None:
        for e in events:
            CHARGED.inc(e.charged_ucr)
            log.info(
                "usage event",
                extra={
                    "request_id": e.request_id,
                    "partner_id": e.partner_id,
                    "key_id": e.key_id,
                    "model": e.model,
                    "input_tokens": e.input_tokens,
                    "output_tokens": e.output_tokens,
                    "charged_ucr": e.charged_ucr,
                    "usage_source": e.usage_source,
                    "status": e.status,
                    "stream": e.stream,
                    "latency_ms": e.latency_ms,
                },
            )
        for partner_id, key_id in dict.fromkeys((e.partner_id, e.key_id) for e in events):
            await self.rules.check_key(partner_id, key_id)
        for partner_id in dict.fromkeys(e.partner_id for e in events):
            await self.rules.check_deposit_line(partner_id)

    async def balances(self, events: list[events_pb2.BalanceChanged]) -> None:
        for partner_id in dict.fromkeys(e.partner_id for e in events):
            await self.rules.check_deposit_line(partner_id)

    async def key_changes(self, events: list[events_pb2.KeyChanged]) -> None:
        # a new customer key of a partner below the line is suspended at once; the
        # worker's own suspensions and resumptions need no second look
        partners = [e.partner_id for e in events if e.change in ("created", "topped_up") and e.reason != DEPOSIT_LINE]
        for partner_id in dict.fromkeys(partners):
            await self.rules.check_deposit_line(partner_id)
        # a top-up may leave a key below its threshold still; a resumed partner key may
        # still be unable to pay for any request (exhausted again)
        for e in events:
            if e.change in ("topped_up", "resumed"):
                await self.rules.check_key(e.partner_id, e.key_id)

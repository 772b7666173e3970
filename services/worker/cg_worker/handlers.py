"""Which rules each stream's events trigger. A batch is reduced to the distinct keys
and partners it names, so a burst of events costs one check each."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from cg_worker.metrics import CHARGED
from cg_worker.rules import DEPOSIT_LINE, Rules
from cg_worker.webhook_events import WebhookEvents
from creditgate.events.v1 import events_pb2 as epb
from creditgate.ledger.v1 import ledger_pb2 as lpb

log = logging.getLogger("cg_worker.usage")
E = TypeVar("E", bound=int)  # a proto enum's values

# a new customer key of a partner below the line is suspended at once (and a top-up
# changes the partner's balance); the worker's own suspensions and resumptions need no
# second look
_DEPOSIT_LINE_CHANGES = frozenset({epb.KEY_CHANGE_CREATED, epb.KEY_CHANGE_TOPPED_UP})
# a top-up may leave a key below its threshold still; a resumed partner key may still be
# unable to pay for any request (exhausted again)
_KEY_CHANGES = frozenset({epb.KEY_CHANGE_TOPPED_UP, epb.KEY_CHANGE_RESUMED})


def _word(name: Callable[[E], str], number: E, prefix: str) -> str:
    """An enum value as a log word (``USAGE_SOURCE_PROVIDER`` -> ``provider``); a number
    this build does not know (a newer publisher's) as itself."""
    try:
        return name(number).removeprefix(prefix).lower()
    except ValueError:
        return str(number)


class Handlers:
    def __init__(self, rules: Rules, webhooks: WebhookEvents | None = None) -> None:
        self.rules = rules
        self.webhooks = webhooks  # partner.balance_low, key.* and customer_key.* (cg_worker.webhook_events)

    async def usage(self, events: list[epb.UsageEvent]) -> None:
        for e in events:
            CHARGED.inc(e.charged_ucr)
        if log.isEnabledFor(logging.INFO):  # the line's fields cost more than the rest of the round
            for e in events:
                log.info(
                    "usage event",
                    extra={
                        "request_id": e.request_id,
                        "partner_id": e.partner_id,
                        "customer_id": e.customer_id,
                        "key_id": e.key_id,
                        "model": e.model,
                        "input_tokens": e.input_tokens,
                        "output_tokens": e.output_tokens,
                        "charged_ucr": e.charged_ucr,
                        "usage_source": _word(lpb.UsageSource.Name, e.source, "USAGE_SOURCE_"),
                        "outcome": _word(epb.UsageOutcome.Name, e.outcome, "USAGE_OUTCOME_"),
                        "stream": e.stream,
                        "latency_ms": e.latency_ms,
                    },
                )
        for partner_id, key_id in dict.fromkeys((e.partner_id, e.key_id) for e in events):
            await self.rules.check_key(partner_id, key_id)
        # Only a request billed to a customer can have moved its partner's balance: a
        # customer-created key is paid from that balance (and always bills its customer),
        # while a partner key's requests are paid from the key's own budget, funded
        # beforehand (funding, top-ups and refunds come as BalanceChanged events).
        for partner_id in dict.fromkeys(e.partner_id for e in events if e.customer_id):
            await self.rules.check_deposit_line(partner_id)

    async def balances(self, events: list[epb.BalanceChanged]) -> None:
        for partner_id in dict.fromkeys(e.partner_id for e in events):
            await self.rules.check_deposit_line(partner_id)
            if self.webhooks is not None:
                await self.webhooks.balance(partner_id)

    async def key_changes(self, events: list[epb.KeyChanged]) -> None:
        partners = [e.partner_id for e in events if e.change in _DEPOSIT_LINE_CHANGES and e.suspension != DEPOSIT_LINE]
        for partner_id in dict.fromkeys(partners):
            await self.rules.check_deposit_line(partner_id)
        for e in events:
            if e.change in _KEY_CHANGES:
                await self.rules.check_key(e.partner_id, e.key_id)
        if self.webhooks is not None:
            await self.webhooks.key_changes(events)

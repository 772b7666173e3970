"""cg_worker.handlers: which rules each event triggers, decided on the events' enums."""

from __future__ import annotations

import logging

import pytest

from cg_worker.handlers import Handlers
from creditgate.events.v1 import events_pb2 as epb
from creditgate.keys.v1 import keys_pb2 as kpb
from creditgate.ledger.v1 import ledger_pb2 as lpb


class FakeRules:
    def __init__(self) -> None:
        self.keys: list[tuple[str, str]] = []
        self.partners: list[str] = []

    async def check_key(self, partner_id: str, key_id: str) -> None:
        self.keys.append((partner_id, key_id))

    async def check_deposit_line(self, partner_id: str) -> None:
        self.partners.append(partner_id)


def changed(change: int, key: str = "k1", partner: str = "p1", suspension: int = 0) -> epb.KeyChanged:
    return epb.KeyChanged(key_id=key, partner_id=partner, change=change, suspension=suspension)


@pytest.mark.parametrize(
    ("event", "deposit_line", "key"),
    [
        (changed(epb.KEY_CHANGE_CREATED), True, False),
        (changed(epb.KEY_CHANGE_TOPPED_UP), True, True),
        (changed(epb.KEY_CHANGE_RESUMED), False, True),
        # the worker's own suspensions need no second look
        (changed(epb.KEY_CHANGE_SUSPENDED, suspension=kpb.SUSPENSION_REASON_DEPOSIT_LINE), False, False),
        (changed(epb.KEY_CHANGE_SUSPENDED, suspension=kpb.SUSPENSION_REASON_BY_PARTNER), False, False),
        (changed(epb.KEY_CHANGE_CREATED, suspension=kpb.SUSPENSION_REASON_DEPOSIT_LINE), False, False),
        (changed(epb.KEY_CHANGE_REVOKED), False, False),
        (changed(epb.KEY_CHANGE_UPDATED), False, False),
        (changed(epb.KEY_CHANGE_UNSPECIFIED), False, False),
    ],
)
async def test_key_changes_trigger_the_rules_their_kind_calls_for(event, deposit_line, key):
    rules = FakeRules()
    await Handlers(rules).key_changes([event])
    assert rules.partners == (["p1"] if deposit_line else [])
    assert rules.keys == ([("p1", "k1")] if key else [])


async def test_a_batch_checks_each_partner_once():
    rules = FakeRules()
    events = [changed(epb.KEY_CHANGE_CREATED, key=k) for k in ("k1", "k2")] + [changed(epb.KEY_CHANGE_TOPPED_UP)]
    await Handlers(rules).key_changes(events)
    assert (rules.partners, rules.keys) == (["p1"], [("p1", "k1")])


async def test_usage_events_are_logged_with_their_enums_as_words(caplog):
    rules = FakeRules()
    event = epb.UsageEvent(
        request_id="r1",
        key_id="k1",
        partner_id="p1",
        customer_id="c1",
        source=lpb.USAGE_SOURCE_ESTIMATED,
        outcome=epb.USAGE_OUTCOME_CLIENT_DISCONNECTED,
    )
    newer = epb.UsageEvent(request_id="r2", key_id="k1", partner_id="p1", outcome=99)  # a value from a newer proxy
    with caplog.at_level(logging.INFO, logger="cg_worker.usage"):
        await Handlers(rules).usage([event, newer])
    logged = {r.request_id: r for r in caplog.records}
    assert (logged["r1"].usage_source, logged["r1"].outcome, logged["r1"].customer_id) == (
        "estimated",
        "client_disconnected",
        "c1",
    )
    assert logged["r2"].outcome == "99"
    assert (rules.keys, rules.partners) == ([("p1", "k1")], ["p1"])  # r1 bills customer c1


async def test_only_usage_billed_to_a_customer_checks_the_deposit_line():
    """A partner key's requests are paid from its own budget: its partner's balance did not
    move, so no deposit-line check; a customer's request (a customer-created key is paid
    from the partner's balance) calls for one, once per partner of the batch."""
    rules = FakeRules()
    partner_keys = [epb.UsageEvent(request_id=f"r{i}", key_id="k1", partner_id="p1") for i in range(3)]
    await Handlers(rules).usage(partner_keys)
    assert (rules.keys, rules.partners) == ([("p1", "k1")], [])

    rules = FakeRules()
    mixed = [
        *partner_keys,
        epb.UsageEvent(request_id="r3", key_id="k2", partner_id="p2", customer_id="c1"),
        epb.UsageEvent(request_id="r4", key_id="k3", partner_id="p2", customer_id="c2"),
    ]
    await Handlers(rules).usage(mixed)
    assert (rules.keys, rules.partners) == ([("p1", "k1"), ("p2", "k2"), ("p2", "k3")], ["p2"])

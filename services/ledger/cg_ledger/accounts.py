"""Account ids, kinds and units.

An account id is ``<kind>:<owner>``. Each kind has one unit, and money only moves
between accounts of the same unit, so the sum of every unit's balances is zero
(the external accounts hold minus what came in from outside).

| kind        | unit       | what it is                                             |
|-------------|------------|--------------------------------------------------------|
| partner     | credits    | a partner's balance (bought credits)                   |
| key         | credits    | a partner key's pre-funded budget                      |
| keydeposit  | credits    | the 1,000-credit deposit held for a customer-made key  |
| platform    | credits    | ``platform:usage`` (provider cost), ``platform:fees``  |
|             |            | (``platform:usage`` is kept in 16 shards, below)       |
| customer    | ai_credits | a customer's AI credits                                |
| partnerrev  | ai_credits | what a partner's customers paid it, in AI credits      |
| external    | both       | ``external:credits`` / ``external:ai_credits``: outside|

The usage sink is credited by every settlement, so one row of it would be a lock every
settling transaction queues on, whatever the number of ledger replicas. It is kept in
``USAGE_SHARD_COUNT`` rows instead, ``platform:usage:00`` .. ``:15``, a settlement's shard
chosen by its request id (``usage_shard``, stable across processes). Whatever reads
``platform:usage`` reads the sum of its shards and of the single ``platform:usage`` row
that books from before the shards keep (``stored_ids``); the audit checks each row as any
account, so conservation still balances exactly.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from cg_ledger.errors import InvalidArgument
from cg_ledger.limits import MAX_ACCOUNT_LEN

CREDITS = "credits"
AI_CREDITS = "ai_credits"

KIND_UNITS = {
    "partner": CREDITS,
    "key": CREDITS,
    "keydeposit": CREDITS,
    "platform": CREDITS,
    "customer": AI_CREDITS,
    "partnerrev": AI_CREDITS,
}
USAGE_SINK = "platform:usage"
USAGE_SHARD_COUNT = 16
USAGE_SHARDS = tuple(f"{USAGE_SINK}:{i:02d}" for i in range(USAGE_SHARD_COUNT))
PLATFORM_ACCOUNTS = {USAGE_SINK, *USAGE_SHARDS, "platform:fees"}
EXTERNAL = {CREDITS: "external:credits", AI_CREDITS: "external:ai_credits"}
FEES = "platform:fees"
KINDS = (*KIND_UNITS, "external")


@dataclass(frozen=True)
class AccountId:
    id: str
    kind: str
    unit: str


def parse(account: str, field: str = "account", kinds: set[str] | None = None) -> AccountId:
    kind, sep, owner = account.partition(":")
    allowed = kinds or set(KIND_UNITS)
    if len(account) > MAX_ACCOUNT_LEN:
        raise InvalidArgument(f"{field}: at most {MAX_ACCOUNT_LEN} characters, got {len(account)}")
    if not sep or kind not in allowed or not owner or not owner.isprintable():
        raise InvalidArgument(f"{field}: expected <{'|'.join(sorted(allowed))}>:<id>, got {account!r}")
    if kind == "platform" and account not in PLATFORM_ACCOUNTS:
        raise InvalidArgument(f"{field}: unknown platform account {account!r}")
    return AccountId(account, kind, KIND_UNITS[kind])


def external(unit: str) -> AccountId:
    return AccountId(EXTERNAL[unit], "external", unit)


def key_account(key_id: str) -> str:
    return f"key:{key_id}"


def usage_shard(request_id: str) -> str:
    """The usage sink's shard a request's provider cost is credited to."""
    return USAGE_SHARDS[zlib.crc32(request_id.encode()) % USAGE_SHARD_COUNT]


def stored_ids(account: str) -> tuple[str, ...]:
    """The rows an account is kept in: the usage sink's shards and its pre-shard row, or
    the account's own row."""
    return (USAGE_SINK, *USAGE_SHARDS) if account == USAGE_SINK else (account,)

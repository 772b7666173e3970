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
| customer    | ai_credits | a customer's AI credits                                |
| partnerrev  | ai_credits | what a partner's customers paid it, in AI credits      |
| external    | both       | ``external:credits`` / ``external:ai_credits``: outside|
"""

from __future__ import annotations

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
PLATFORM_ACCOUNTS = {"platform:usage", "platform:fees"}
EXTERNAL = {CREDITS: "external:credits", AI_CREDITS: "external:ai_credits"}
USAGE_SINK = "platform:usage"
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

"""Hypothesis strategies for any protobuf request message, from its descriptor.

Values are drawn to hurt: the strings a service must refuse (empty, huge, control
characters, other tenants' ids, malformed decimals) mixed with ones it knows (ids that
exist, account names), integers at every edge of their type and of the ledger's bounds,
enum numbers no one defined, and nested messages a few levels deep.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
EDGE_INTS = [
    0,
    1,
    -1,
    2,
    999_999,
    1_000_000,
    10**12,
    10**15,
    10**15 + 1,
    2**31 - 1,
    2**53 + 1,
    2**62,
    2**63 - 1,
    -(2**63),
]
NASTY_STRINGS = [
    "",
    " ",
    "x" * 121,
    "x" * 5_000,
    "a:b",
    "partner:",
    ":",
    "\x00",
    "é" * 70,
    "🙂",
    "NaN",
    "Infinity",
    "-1",
    "1e400",
    "0.0000000000000000000000001",
    "1" * 40,
    "../../etc/passwd",
    "external:credits",
    "platform:usage",
    "platform:fees",
    "key:nope",
    "partner:nope",
    "customer:nope",
]
DECIMALS = ["0", "1", "1.5", "0.05", "100", "1000000", "1000001", "-0.5", "1e3", "NaN", "inf", "", "abc"]


def _ints(fd: FieldDescriptor) -> st.SearchStrategy[int]:
    lo, hi = INT64 if fd.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64) else INT32
    edges = [v for v in EDGE_INTS if lo <= v <= hi]
    plausible = st.integers(1, 10**9) if fd.name.endswith(("_ucr", "_uai")) else st.integers(1, 5_000)
    # mostly plausible values, so that calls get past validation to the code that moves money
    return st.one_of(plausible, plausible, st.sampled_from(edges), st.integers(lo, hi))


# Which ids of ``Known`` a field wants, by its name (first match wins).
_WANTS = (
    ("customer_account", "customer_accounts"),
    ("revenue_account", "revenue_accounts"),
    ("account", "accounts"),
    ("partner_id", "partner_ids"),
    ("customer_id", "customer_ids"),
    ("key_id", "key_ids"),
    ("key", "key_ids"),
    ("model", "models"),
    ("tier", "tiers"),
)


@dataclass
class Known:
    """Ids that exist, by kind: a field gets the kind its name asks for, most of the time."""

    partner_ids: list[str] = field(default_factory=list)
    customer_ids: list[str] = field(default_factory=list)
    key_ids: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)
    customer_accounts: list[str] = field(default_factory=list)
    revenue_accounts: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    tiers: list[str] = field(default_factory=list)

    def every(self) -> list[str]:
        return [v for values in vars(self).values() for v in values] or ["x"]

    def for_field(self, name: str) -> list[str]:
        for fragment, kind in _WANTS:
            if fragment in name and getattr(self, kind):
                return getattr(self, kind)
        return self.every()


def _strings(name: str, known: Known) -> st.SearchStrategy[str]:
    """Strings for a field, by what its name says it holds: mostly something that could
    be right (a known id of the right kind, a decimal, a fresh idempotency key),
    sometimes anything at all."""
    anything = st.one_of(st.sampled_from(NASTY_STRINGS), st.sampled_from(known.every()), st.text(max_size=40))
    if name.startswith("idempotency") or name == "request_id":
        likely = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=24)
    elif name.endswith(("usd_per_mtok", "multiplier", "cents", "rate", "_usd")):
        likely = st.sampled_from(DECIMALS)
    elif any(fragment in name for fragment, _ in _WANTS) or name == "kind":
        likely = st.sampled_from(known.for_field(name))
    else:
        likely = st.text(max_size=40)
    return st.one_of(likely, likely, likely, anything)


_UNSET = object()


def message_strategy(descriptor: Descriptor, known: Known, depth: int = 3) -> st.SearchStrategy[dict]:
    """Field values (as a dict for the message's constructor) of a ``descriptor`` message;
    ``known`` are ids worth trying (existing partners, keys, accounts)."""
    fields = {}
    for fd in descriptor.fields:
        value: st.SearchStrategy
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if depth <= 0:
                continue
            value = message_strategy(fd.message_type, known, depth - 1).map(lambda kw, t=fd.message_type: _build(t, kw))
        elif fd.type == FieldDescriptor.TYPE_STRING:
            value = _strings(fd.name, known)
        elif fd.type == FieldDescriptor.TYPE_BOOL:
            value = st.booleans()
        elif fd.type == FieldDescriptor.TYPE_ENUM:
            numbers = [v.number for v in fd.enum_type.values]
            value = st.one_of(st.sampled_from(numbers), st.integers(-5, 50))
        elif fd.type in (
            FieldDescriptor.TYPE_INT64,
            FieldDescriptor.TYPE_INT32,
            FieldDescriptor.TYPE_SINT64,
            FieldDescriptor.TYPE_SINT32,
        ):
            value = _ints(fd)
        else:  # bytes, doubles, unsigned: our contracts have none; fail loudly if one appears
            raise NotImplementedError(f"{descriptor.full_name}.{fd.name}: type {fd.type}")
        if fd.is_repeated:
            value = st.lists(value, max_size=3)
        fields[fd.name] = value
    # each field is left unset about one time in eight
    drawn = st.fixed_dictionaries({name: st.one_of(st.just(_UNSET), *[value] * 7) for name, value in fields.items()})
    return drawn.map(lambda kw: {k: v for k, v in kw.items() if v is not _UNSET})


def _build(descriptor: Descriptor, kwargs: dict) -> Message:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)(**kwargs)


def request_strategy(descriptor: Descriptor, known: Known) -> st.SearchStrategy[Message]:
    return message_strategy(descriptor, known).map(lambda kw: _build(descriptor, kw))

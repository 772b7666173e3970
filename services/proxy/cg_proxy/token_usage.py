"""Token counts of a metered request: the most output it may produce (the output half of
the hold; ``cg_proxy.tokens`` bounds the prompt), and what it used: the provider's own
report, or a marked estimate when the provider never gave one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cg_proxy import errors
from creditgate.keys.v1 import keys_pb2
from creditgate.ledger.v1 import ledger_pb2

# The output bound of a request that names none, for a model whose catalog entry has no cap.
DEFAULT_OUTPUT_CAP = 4096


@dataclass
class Usage:
    input_tokens: int
    output_tokens: int
    source: ledger_pb2.UsageSource.ValueType  # provider-reported or estimated


def max_output_tokens(body: dict[str, Any], route: keys_pb2.ModelRoute) -> int:
    """The request's output bound (``max_completion_tokens``, else ``max_tokens``), at
    most the model's cap. A request through the routes was validated before
    (``cg_proxy.request_checks``: a positive 64-bit integer, not above the cap); the
    check here stays for other callers, such as a provider adapter's own tests."""
    cap = route.max_output_tokens
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if value is None:
            continue
        if isinstance(value, float) and value.is_integer():  # JSON's 100.0 is 100
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise errors.bad_request(f"`{field}` must be a positive integer.", param=field)
        # a model without a known cap holds what was asked for: the provider may produce it
        return min(value, cap) if cap else value
    return cap or DEFAULT_OUTPUT_CAP


def usage_from(payload: Any) -> Usage | None:
    """The provider-reported usage block of a reply or a chunk, if it is well formed."""
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return None
    pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(pt, int) or not isinstance(ct, int) or pt < 0 or ct < 0:
        return None
    return Usage(pt, ct, ledger_pb2.USAGE_SOURCE_PROVIDER)


def estimate(prompt_bound: int, output_chars: int) -> Usage:
    """A marked estimate when the provider never reported usage: the prompt bound we
    reserved with, and ~4 characters per output token, rounded up."""
    return Usage(prompt_bound, (output_chars + 3) // 4, ledger_pb2.USAGE_SOURCE_ESTIMATED)

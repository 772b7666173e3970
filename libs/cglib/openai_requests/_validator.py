"""``RequestValidator``: OpenAI's request schemas, compiled once, checked per request.

jsonschema-rs (Rust) validates: on a typical chat body it is an order of magnitude
faster than fastjsonschema's generated Python, whose ``if``/``oneOf`` branches run as
exceptions, and it compiles the three schemas in milliseconds rather than a large
fraction of a second (figures: ``make bench``, docs/benchmarks.md). Its errors carry
the failing keyword, its facts and the path to the value, which is all
``_errors.from_violation`` needs to answer in OpenAI's words.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema_rs

from cglib.openai_requests._errors import RequestInvalid, from_violation
from cglib.openai_requests._parse import parse_body
from cglib.openai_requests._schema import ROOTS, TYPE_ORDER, endpoint_schema, load_document

OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens")


class RequestValidator:
    """One compiled validator per endpoint (``chat``, ``completions``, ``embeddings``).

    ``extra`` adds a caller's own rules per endpoint (a JSON Schema checked after
    OpenAI's, rewritten the same way): the gateway refuses a few things OpenAI accepts."""

    def __init__(self, extra: Mapping[str, dict[str, Any]] | None = None) -> None:
        document = load_document()
        self.source: dict[str, str] = document["x-source"]
        self._validators = {
            endpoint: jsonschema_rs.validator_for(endpoint_schema(endpoint, document, (extra or {}).get(endpoint)))
            for endpoint in ROOTS
        }

    def check(self, endpoint: str, body: dict[str, Any]) -> None:
        """``RequestInvalid`` naming the first field that breaks the schema, if one does."""
        validator = self._validators[endpoint]
        if validator.is_valid(body):
            return
        try:
            validator.validate(body)
        except jsonschema_rs.ValidationError as e:
            raise _violation(e, body) from None

    def parse(self, endpoint: str, raw: bytes) -> dict[str, Any]:
        """``parse_body`` then ``check``: the body, valid for ``endpoint``."""
        body = parse_body(raw)
        self.check(endpoint, body)
        return body


def check_output_cap(body: dict[str, Any], cap: int) -> None:
    """OpenAI refuses an output bound above the model's: ``max_tokens is too large``."""
    for field in OUTPUT_FIELDS:
        value = body.get(field)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > cap:
            shown = int(value) if float(value).is_integer() else value
            raise RequestInvalid(
                f"{field} is too large: {shown}. This model supports at most {cap} completion "
                f"tokens, whereas you provided {shown}.",
                field,
                "invalid_value",
            )


def _steps(body: Any, path: list[Any]) -> list[Any]:
    """The path with object keys as strings and array positions as ints (the validator
    reports the key ``"50256"`` of ``logit_bias`` as the number 50256)."""
    steps, node = [], body
    for step in path:
        if isinstance(node, dict):
            step = str(step)
            node = node.get(step)
        elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            node = node[step]
        steps.append(step)
    return steps


def _violation(e: jsonschema_rs.ValidationError, body: Any) -> RequestInvalid:
    kind = e.kind
    detail = dict(kind.as_dict())
    if kind.name == "type":
        detail["types"] = sorted(
            detail.get("types") or [], key=lambda t: TYPE_ORDER.index(t) if t in TYPE_ORDER else len(TYPE_ORDER)
        )
    elif kind.name == "propertyNames":
        inner = detail.pop("error", None)
        inner_kind = getattr(inner, "kind", None)
        limit = inner_kind.as_dict().get("limit") if inner_kind is not None else None
        detail["reason"] = (
            f"keys are at most {limit} characters" if inner_kind and inner_kind.name == "maxLength" else "invalid key"
        )
    return from_violation(kind.name, _steps(body, list(e.instance_path)), e.instance, detail)

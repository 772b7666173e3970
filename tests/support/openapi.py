"""OpenAI's OpenAPI description as JSON Schema 2020-12, to validate what the gateway sends.

The document lives in the shared specs beside the repository (``<repo>/../shared/specs/``;
CI lays shared/ next to its clone). It says ``openapi: 3.1.0`` but still marks ~110
schemas with the OpenAPI 3.0 keyword ``nullable: true``, which a 2020-12 validator
ignores (and so rejects the nulls the real API sends): every such schema is rewritten
into ``anyOf: [<schema>, {type: "null"}]`` once, at load. ``$ref``s to
``#/components/schemas/...`` are resolved inside the document by the validator.

    validate("CreateChatCompletionResponse", body)   # raises jsonschema.ValidationError
    errors("CreateCompletionResponse", chunk)        # every error, for a test to judge
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["SPEC_PATH", "errors", "schema_names", "spec", "validate", "validator"]

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = Path(os.environ.get("CG_OPENAI_SPEC", REPO_ROOT.parent / "shared" / "specs" / "openai-openapi.yaml"))
_URI = "urn:creditgate:openai-openapi"


def _without_nullable(node: Any) -> Any:
    """The document with each ``nullable: true`` schema as ``anyOf [schema, null]``
    (``nullable: false`` is dropped: it says nothing)."""
    if isinstance(node, list):
        return [_without_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    # (a *property* named "nullable" would hold a schema, not a bool: it is kept)
    out = {
        key: _without_nullable(value)
        for key, value in node.items()
        if not (key == "nullable" and isinstance(value, bool))
    }
    if node.get("nullable") is True:
        # Annotations stay outside; the constraints move into the first branch.
        notes = {k: out.pop(k) for k in ("description", "title", "deprecated", "default", "example") if k in out}
        return {**notes, "anyOf": [out, {"type": "null"}]}
    return out


class _JSONLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML as JSON sees it: an unquoted date stays a string (as in openapi.json)."""


_JSONLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@functools.lru_cache(maxsize=1)
def spec() -> dict[str, Any]:
    """The whole OpenAPI document, ``nullable`` rewritten (loaded once: ~1 s)."""
    if not SPEC_PATH.exists():
        raise FileNotFoundError(
            f"OpenAI's OpenAPI description is not at {SPEC_PATH}: put shared/ beside the "
            "clone, or set CG_OPENAI_SPEC to a copy of openai/openai-openapi's openapi.yaml"
        )
    with SPEC_PATH.open(encoding="utf-8") as f:
        return _without_nullable(yaml.load(f, Loader=_JSONLoader))


@functools.lru_cache(maxsize=1)
def _registry() -> Registry:
    return Registry().with_resource(_URI, Resource(contents=spec(), specification=DRAFT202012))


def schema_names() -> list[str]:
    return sorted(spec()["components"]["schemas"])


@functools.cache
def validator(schema_name: str) -> jsonschema.Draft202012Validator:
    if schema_name not in spec()["components"]["schemas"]:
        raise KeyError(f"no schema {schema_name!r} in {SPEC_PATH.name}")
    return jsonschema.Draft202012Validator({"$ref": f"{_URI}#/components/schemas/{schema_name}"}, registry=_registry())


def validate(schema_name: str, instance: Any) -> None:
    """Raises ``jsonschema.ValidationError`` (the most relevant error) if ``instance``
    does not match ``components.schemas.<schema_name>``."""
    error = jsonschema.exceptions.best_match(validator(schema_name).iter_errors(instance))
    if error is not None:
        raise error


def errors(schema_name: str, instance: Any) -> list[jsonschema.ValidationError]:
    return list(validator(schema_name).iter_errors(instance))

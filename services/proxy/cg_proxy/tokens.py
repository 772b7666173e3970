"""An upper bound on a request's prompt tokens, for the hold reserved before forwarding.

``prompt_tokens_bound(endpoint, body, raw, route)`` never raises: whatever goes wrong,
the answer is ``len(raw)``, the old rule.

OpenAI models (``route.provider == "openai"``, or an upstream model named ``gpt-…``,
``o1``/``o3``/``o4…``, ``text-embedding-…``) whose encoding is known are counted with
tiktoken, then widened so the result stays an upper bound:

- chat: OpenAI's counting rule (cookbook "How to count tokens with tiktoken", checked
  there against the API: 3 tokens per message, 1 per ``name``, 3 to prime the reply;
  every string field of a message is encoded, ``role`` included), widened to 4 per
  message (the older ``gpt-3.5-turbo-0301`` framing) and 2 per content part. Text parts
  and refusals are encoded; an image part counts ``_IMAGE_TOKENS`` (4,096; 48,169 for
  gpt-4o-mini) whatever its size, URL or base64; any other part (audio, file...) counts its JSON's UTF-8 bytes. Anything else
  in a message (``tool_calls``, ``function_call``...) and every non-scalar top-level
  field (``tools``, ``functions``, ``response_format``...) counts as the tokens of its
  JSON, plus ``_TOOLS_TOKENS`` + ``_PER_TOOL_TOKENS`` each when tools are declared
  (OpenAI renders them in a shorter TypeScript-like form, so JSON is the generous side).
- completions / embeddings: the tokens of each prompt/input string (an array of token
  ids counts its length), with no framing.

and then ``n + n // 32 + 16`` (~3 % plus 16) on top, for framing we do not model. For a
text-only request (no image, tool, schema or unknown part) the bound is also capped at
``len(raw)``: a token is at least one byte, so there it is never above the old rule.

Every other model keeps the byte rule, which holds because their tokenizers (Claude's,
Llama's, Mistral's, Gemini's) are byte-level or byte-fallback BPEs, so a text has no more
tokens than UTF-8 bytes, and the JSON around each message pays for the chat framing.
Two things the body's bytes do not pay for are added: an image given by URL is ~100
bytes but costs the model up to a few thousand tokens (``_OTHER_IMAGE_TOKENS`` each),
and a request with tools makes Anthropic add a tool-use system prompt of up to 530
tokens (``_OTHER_TOOLS_TOKENS``).

The encodings are ``cg_proxy.tokenizers``'s (shipped files, never the network).

Cost: linear in the prompt's characters (see ``count_text``; figures in
docs/benchmarks.md, "Prompt-token bounds"), the byte rule next to nothing. tiktoken
releases the GIL while it encodes, so a caller may run a large body's bound in a thread
(``asyncio.to_thread``) to keep the event loop free.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import tiktoken

from cg_proxy.tokenizers import encoding, encoding_name_for

log = logging.getLogger(__name__)


# -- allowances -----------------------------------------------------------------------------

# Image tokens of any one image, from OpenAI's documented formulas: tiles (at most 8 of
# 512 px after scaling into 2048² and the short side to 768) cost 85 + 170·8 = 1,445
# (gpt-4o, gpt-4.1), 75 + 150·8 = 1,275 (o1, o3), 70 + 140·8 = 1,190 (gpt-5); 32 px
# patches (at most 1,536) cost 1,536 × 1.62 / 1.72 / 2.46 = 2,489 / 2,642 / 3,779
# (gpt-4.1-mini, o4-mini, gpt-4.1-nano and gpt-5-mini/-nano). 4,096 covers them all with
# room for an unannounced multiplier; gpt-4o-mini bills 2,833 + 5,667 per tile, 48,169
# at most. A ``detail`` other than low/high/auto (a level this table predates) gets 16,384.
_IMAGE_TOKENS = 4096
_IMAGE_TOKENS_GPT_4O_MINI = 2833 + 5667 * 8
_IMAGE_TOKENS_UNKNOWN_DETAIL = 16384
_KNOWN_DETAIL = (None, "auto", "low", "high")

_PER_MESSAGE = 4  # cookbook: 3 (4 for gpt-3.5-turbo-0301)
_PER_NAME = 1
_REPLY_PRIMING = 3
_PER_PART = 2
# Tools: OpenAI renders them as "# Tools ## functions namespace functions { ... }" with
# one TypeScript-like type per function; the cookbook's fit of the API counts is 7 (10
# for cl100k models) per function + 3 per property + 12 at the end, over shorter text
# than the compact JSON counted here (its weather tool: 68 tokens rendered, 86 as JSON).
_TOOLS_TOKENS = 16
_PER_TOOL_TOKENS = 10
_HARMONY_TOKENS = 128  # gpt-oss: the harmony system message (identity, dates, channels)

# Other providers: per image (Claude: ≤ ~1.6k, ~4.8k on its high-resolution models;
# Pixtral ≤ ~4.2k at 1024²; Gemini 258 per 768 px tile), and with tools (Anthropic's
# tool-use system prompt: 159–530 tokens by model and tool_choice).
_OTHER_IMAGE_TOKENS = 8192
_OTHER_TOOLS_TOKENS = 1024


def _margin(n: int) -> int:
    return n + n // 32 + 16


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _is_image(part: Any) -> bool:
    return isinstance(part, dict) and isinstance(part.get("type"), str) and "image" in part["type"]


def _parts(messages: Any) -> Any:
    """Every content part of every message (for the image count of the byte rule)."""
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                yield from content


# -- counting -------------------------------------------------------------------------------

_CHUNK = 8192  # characters encoded per call
_LAST_CUT = re.compile(r".*\S( )", re.DOTALL)  # the last space that follows a non-whitespace
_HARD_CUT_TOKENS = 8


def count_text(enc: tiktoken.Encoding, text: str) -> int:
    """The tokens of ``text``, an upper bound if it is long.

    tiktoken's regex and merges cost more than linear time on long runs without spaces
    (1 MB of "a": 0.5 s) and panic (a ``BaseException``) on ~1 M spaces, so a long text
    is encoded ``_CHUNK`` characters at a time. A chunk ends just before a space that
    follows a non-whitespace character: no piece of either encoding's split pattern spans
    such a place, so those cuts change nothing. A window with no such space (a run of
    whitespace, base64, CJK) is cut where it ends, and ``_HARD_CUT_TOKENS`` is added
    for the merges that cut may have split.
    """
    n = len(text)
    if n <= _CHUNK:
        return len(enc.encode_ordinary(text)) if text else 0
    total, start = 0, 0
    while n - start > _CHUNK:
        end = start + _CHUNK
        floor = start + _CHUNK // 2
        last = _LAST_CUT.match(text, floor, end)
        if last:
            cut = last.start(1)
        else:
            cut = end
            total += _HARD_CUT_TOKENS
        total += len(enc.encode_ordinary(text[start:cut]))
        start = cut
    return total + len(enc.encode_ordinary(text[start:]))


class _Counter:
    def __init__(self, enc: tiktoken.Encoding, model: str) -> None:
        self.enc = enc
        self.model = model.strip().lower().removeprefix("ft:")
        self.raw_ok = True  # whether len(raw) is itself a bound (text only)

    def text(self, value: Any) -> int:
        if value is None:
            return 0
        return count_text(self.enc, value if isinstance(value, str) else _json(value))

    def image(self, part: dict[str, Any]) -> int:
        self.raw_ok = False
        image_url = part.get("image_url")
        detail = image_url.get("detail") if isinstance(image_url, dict) else part.get("detail")
        per_image = _IMAGE_TOKENS_GPT_4O_MINI if self.model.startswith("gpt-4o-mini") else _IMAGE_TOKENS
        if detail not in _KNOWN_DETAIL:
            per_image = max(per_image, _IMAGE_TOKENS_UNKNOWN_DETAIL)
        return per_image

    def content(self, content: Any) -> int:
        if not isinstance(content, list):
            return self.text(content)
        n = 0
        for part in content:
            n += _PER_PART
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" or (kind is None and isinstance(part, dict) and "text" in part):
                n += self.text(part.get("text"))
            elif kind == "refusal":
                n += self.text(part.get("refusal"))
            elif _is_image(part):
                n += self.image(part)
            elif isinstance(part, str):
                n += self.text(part)
            else:  # input_audio, file, anything new: no more tokens than its JSON has bytes
                self.raw_ok = False
                n += len(_json(part).encode())
        return n

    def chat(self, body: dict[str, Any]) -> int:
        messages = body.get("messages")
        n = _REPLY_PRIMING
        if isinstance(messages, list):
            for message in messages:
                n += _PER_MESSAGE
                if not isinstance(message, dict):
                    n += self.text(message)
                    continue
                for key, value in message.items():
                    n += self.content(value) if key == "content" else self.text(value)
                    if key == "name":
                        n += _PER_NAME
        else:
            n += self.text(messages)
        tools = 0
        for key, value in body.items():
            if key == "messages" or not isinstance(value, (dict, list)):
                continue  # model, sampling parameters, flags: not part of the prompt
            self.raw_ok = False
            n += self.text(value)
            if key in ("tools", "functions"):
                tools += len(value) if isinstance(value, list) else 1
        if tools:
            n += _TOOLS_TOKENS + _PER_TOOL_TOKENS * tools
        if self.model.startswith("gpt-oss"):
            self.raw_ok = False
            n += _HARMONY_TOKENS
        return n

    def prompts(self, value: Any) -> int:
        """A completions ``prompt`` or embeddings ``input``: a string, an array of token
        ids, or an array of either."""
        if isinstance(value, list):
            if all(isinstance(t, int) for t in value):
                return len(value)
            return sum(self.prompts(v) for v in value)
        return self.text(value)


def _byte_rule(endpoint: str, body: Any, raw: bytes) -> int:
    bound = len(raw)
    if endpoint == "chat" and isinstance(body, dict):
        bound += _OTHER_IMAGE_TOKENS * sum(1 for part in _parts(body.get("messages")) if _is_image(part))
        if body.get("tools") or body.get("functions"):
            bound += _OTHER_TOOLS_TOKENS
    return bound


def _openai_bound(endpoint: str, body: dict[str, Any], raw: bytes, enc: tiktoken.Encoding, model: str) -> int:
    counter = _Counter(enc, model)
    if endpoint == "chat":
        n = counter.chat(body)
    elif endpoint == "completions":
        n = counter.prompts(body.get("prompt")) + counter.text(body.get("suffix"))
    else:
        n = counter.prompts(body.get("input"))
    bound = _margin(n)
    return min(bound, len(raw)) if counter.raw_ok else bound


def prompt_tokens_bound(endpoint: str, body: dict[str, Any], raw: bytes, route: Any) -> int:
    """An upper bound on the prompt tokens the provider will bill for this request.

    ``endpoint`` is "chat", "completions" or "embeddings"; ``body`` the parsed JSON of
    ``raw``; ``route`` a ``keys_pb2.ModelRoute``. Never raises: on any surprise the
    answer is ``len(raw)``.
    """
    try:
        if endpoint not in ("chat", "completions", "embeddings") or not isinstance(body, dict):
            return len(raw)
        model = route.upstream_model or route.id
        name = encoding_name_for(route.provider, model)
        enc = encoding(name) if name else None
        if enc is None:
            return _byte_rule(endpoint, body, raw)
        return _openai_bound(endpoint, body, raw, enc, model)
    except BaseException as e:
        # tiktoken's Rust panics surface as pyo3's PanicException, a BaseException.
        if not isinstance(e, Exception) and type(e).__name__ != "PanicException":
            raise
        log.warning("prompt token bound failed; using the body size", exc_info=True)
        return len(raw)

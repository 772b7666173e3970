"""The mock's one deterministic reply and its token rule, shared by its OpenAI and
Anthropic sides: prompt tokens = words in the messages + 3 per message + 3; the reply is
``REPLY_WORDS``, one token per word."""

from __future__ import annotations

from typing import Any

REPLY = "Hello from the Creditgate mock upstream. This reply is deterministic so usage can be priced exactly."
REPLY_WORDS = REPLY.split()


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    total = 3
    for m in messages:
        content = m.get("content") or ""
        if isinstance(content, list):  # content parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        total += 3 + len(str(content).split())
    return total


__all__ = ["REPLY", "REPLY_WORDS", "count_prompt_tokens"]

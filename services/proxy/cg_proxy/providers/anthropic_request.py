"""OpenAI's chat-completions request as Anthropic's Messages API request (the request half
of ``cg_proxy.providers.anthropic``).

Request (OpenAI → Anthropic):

- ``system``/``developer`` messages → top-level ``system`` (joined by blank lines);
  ``user`` and ``assistant`` turns keep their order, consecutive turns of one role are
  merged; an assistant's ``tool_calls`` → ``tool_use`` blocks; ``tool`` messages →
  ``tool_result`` blocks in a user turn; ``image_url`` parts → ``image`` blocks
  (``data:`` URLs as base64, others by URL).
- ``max_tokens`` (required by Anthropic) = the request's ``max_completion_tokens`` /
  ``max_tokens``, capped at the route's ``max_output_tokens``, else that cap: the same
  bound the reservation used.
- ``stop`` → ``stop_sequences``; ``temperature`` (capped at 1, Anthropic's maximum),
  ``top_p`` as is; ``user`` → ``metadata.user_id``; ``tools`` → ``{name, description,
  input_schema}``; ``tool_choice`` none/auto/required/function → none/auto/any/tool;
  ``parallel_tool_calls: false`` → ``disable_parallel_tool_use``. ``n`` > 1 is refused;
  other OpenAI-only fields (``seed``, penalties, ``logprobs``, ``response_format``...)
  are dropped, as Anthropic's own OpenAI compatibility layer does.
"""

from __future__ import annotations

import json
from typing import Any

from cg_proxy import errors
from cg_proxy.token_usage import max_output_tokens
from creditgate.keys.v1 import keys_pb2


def _bad(message: str, param: str) -> errors.APIError:
    return errors.bad_request(message, param=param)


def _plain_text(content: Any, param: str) -> str:
    """A string, or an array of text parts, as one string."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad("Only text content parts are supported here.", f"{param}.content[{i}]")
            texts.append(part["text"])
        return "\n".join(texts)
    raise _bad("`content` must be a string or an array of content parts.", f"{param}.content")


def _image(part: dict[str, Any], param: str) -> dict[str, Any]:
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url:
        raise _bad("`image_url.url` must be a URL or a data URL.", f"{param}.image_url")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type:
            raise _bad("Image data URLs must look like `data:image/png;base64,...`.", f"{param}.image_url")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _user_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _bad("`content` must be a string or an array of content parts.", f"{param}.content")
    blocks = []
    for i, part in enumerate(content):
        where = f"{param}.content[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            if part["text"]:
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image(part, where))
        else:
            raise _bad(f"Content parts of type `{kind}` are not supported for this model.", where)
    return blocks


def _assistant_blocks(message: dict[str, Any], param: str) -> list[dict[str, Any]]:
    content = message.get("content")
    blocks: list[dict[str, Any]] = []
    if isinstance(content, list):  # text (and refusal) parts
        for i, part in enumerate(content):
            text = part.get("text", part.get("refusal")) if isinstance(part, dict) else None
            if not isinstance(text, str):
                raise _bad("Assistant content parts must be text.", f"{param}.content[{i}]")
            if text:
                blocks.append({"type": "text", "text": text})
    elif isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif content is not None:
        raise _bad("`content` must be a string or an array of content parts.", f"{param}.content")
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _bad("`tool_calls` must be an array.", f"{param}.tool_calls")
    for i, call in enumerate(calls):
        where = f"{param}.tool_calls[{i}]"
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not isinstance(call.get("id"), str)
        ):
            raise _bad("A tool call needs an `id` and a `function` with a `name`.", where)
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError):
            raise _bad("`function.arguments` must be a JSON object.", f"{where}.function.arguments") from None
        if not isinstance(arguments, dict):
            raise _bad("`function.arguments` must be a JSON object.", f"{where}.function.arguments")
        blocks.append({"type": "tool_use", "id": call["id"], "name": function["name"], "input": arguments})
    return blocks


def _tool_result(message: dict[str, Any], param: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _bad("A `tool` message needs the `tool_call_id` it answers.", f"{param}.tool_call_id")
    return {"type": "tool_result", "tool_use_id": call_id, "content": _plain_text(message.get("content"), param)}


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("`tools` must be an array.", "tools")
    out = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _bad("Only `function` tools with a `name` are supported for this model.", f"tools[{i}]")
        spec: dict[str, Any] = {"name": function["name"]}
        if isinstance(function.get("description"), str):
            spec["description"] = function["description"]
        spec["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
        out.append(spec)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    result: dict[str, Any] | None
    if choice is None:
        result = {"type": "auto"} if parallel is False else None
    elif choice in ("none", "auto"):
        result = {"type": choice}
    elif choice == "required":
        result = {"type": "any"}
    elif (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("function"), dict)
        and isinstance(choice["function"].get("name"), str)
    ):
        result = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise _bad("`tool_choice` must be none, auto, required or a named function.", "tool_choice")
    if result is not None and parallel is False and result["type"] != "none":
        result["disable_parallel_tool_use"] = True
    return result


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"`{name}` must be a number.", name)
    return value


def to_messages_request(body: dict[str, Any], route: keys_pb2.ModelRoute) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat-completions ``body``."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(body.get("messages") or []):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad("Each message must be an object.", param)
        role = message.get("role")
        if role in ("system", "developer"):
            text = _plain_text(message.get("content"), param)
            if text:
                system.append(text)
            continue
        if role == "user":
            turn_role, blocks = "user", _user_blocks(message.get("content"), param)
        elif role == "assistant":
            turn_role, blocks = "assistant", _assistant_blocks(message, param)
        elif role == "tool":
            turn_role, blocks = "user", [_tool_result(message, param)]
        else:
            raise _bad(f"Messages with role `{role}` are not supported for this model.", f"{param}.role")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": turn_role, "content": blocks})
    for turn in turns:  # a lone text block is sent as a plain string
        if len(turn["content"]) == 1 and turn["content"][0]["type"] == "text":
            turn["content"] = turn["content"][0]["text"]

    n = body.get("n")
    if n is not None and n != 1:
        raise _bad("Only `n: 1` is supported for this model.", "n")
    out: dict[str, Any] = {"model": body["model"], "max_tokens": max_output_tokens(body, route), "messages": turns}
    if system:
        out["system"] = "\n\n".join(system)
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if stop:
            out["stop_sequences"] = list(stop)
    elif stop is not None:
        raise _bad("`stop` must be a string or an array of strings.", "stop")
    temperature = _number(body, "temperature")
    if temperature is not None:
        out["temperature"] = min(temperature, 1.0)
    top_p = _number(body, "top_p")
    if top_p is not None:
        out["top_p"] = top_p
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    if body.get("stream") is True:
        out["stream"] = True
    return out

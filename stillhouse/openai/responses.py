"""The OpenAI Responses API (`POST /v1/responses`) as a bridge onto chat completions: the request
as Stillhouse checks it, the chat body it becomes, and the Response object a chat completion turns
back into (`response_object`). The streamed form is in responses_stream.py.

Pure functions, no store and no I/O: the conversation a `previous_response_id` names is passed in.
A Responses field the bridge does not know is not sent on (a chat upstream would refuse it).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import BadRequest

# Input item types the bridge carries. `reasoning` items (sent back by clients that replay a
# reasoning model's output) have no chat form and are left out.
ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning")
TEXT_PARTS = ("input_text", "output_text", "text")


class ResponsesRequest(BaseModel):
    """The fields the bridge reads, in the official order; strict like the chat request."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    metadata: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = Field(None, min_length=1)
    reasoning: dict[str, Any] | None = None
    store: bool | None = None
    stream: bool | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    text: dict[str, Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    top_p: float | None = Field(None, ge=0, le=1)
    user: str | None = None


def _text(item: dict[str, Any], key: str, param: str, default: str | None = "") -> Any:
    """`item[key]`, which must be a string (or absent: `default`); else BadRequest naming it."""
    value = item.get(key, default)
    if value is not default and not isinstance(value, str):
        raise BadRequest(
            f"{param}.{key}: must be a string", param=f"{param}.{key}", code="invalid_type"
        )
    return value


def _part(part: Any, param: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in TEXT_PARTS:
        return {"type": "text", "text": _text(part, "text", param)}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        image = {"url": part["image_url"]}
        if "detail" in part:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise BadRequest(
        f"{param}.type: content part type {kind!r} is not supported by the gateway "
        f"(supported: {', '.join(TEXT_PARTS)}, input_image with an image_url)",
        param=f"{param}.type",
        code="invalid_value",
    )


def _content(content: Any, role: str, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        message = f"{param}: must be a string or a list of content parts"
        raise BadRequest(message, param=param, code="invalid_type")
    parts = [_part(p, f"{param}[{i}]") for i, p in enumerate(content)]
    if role != "user" or all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts if p["type"] == "text")
    return parts


def input_messages(items: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Responses input as chat messages: a string is one user message; function_call items join
    the assistant message before them; function_call_output items become tool messages."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        param = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise BadRequest(
                    f"{param}.role: {role!r} is not one of user, assistant, system, developer",
                    param=f"{param}.role",
                    code="invalid_value",
                )
            out.append({"role": role, "content": _content(item.get("content"), role, param)})
        elif kind == "function_call":
            call = {
                "id": _text(item, "call_id", param, None) or _text(item, "id", param, None),
                "type": "function",
                "function": {
                    "name": _text(item, "name", param),
                    "arguments": _text(item, "arguments", param),
                },
            }
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            elif last is not None and last["role"] == "assistant" and not last.get("content"):
                last["tool_calls"] = [call]
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output", "")
            text = output if isinstance(output, str) else _content(output, "tool", param)
            call_id = _text(item, "call_id", param, None)
            out.append({"role": "tool", "tool_call_id": call_id, "content": text})
        elif kind != "reasoning":
            raise BadRequest(
                f"{param}.type: unknown input item type {kind!r} "
                f"(the gateway takes: {', '.join(ITEM_TYPES)})",
                param=f"{param}.type",
                code="invalid_value",
            )
    return out


def _tool(tool: dict[str, Any], i: int) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise BadRequest(
            f"tools[{i}].type: tool type {tool.get('type')!r} is not supported by the gateway "
            "(only function tools)",
            param=f"tools[{i}].type",
            code="invalid_value",
        )
    keys = ("name", "description", "parameters", "strict")
    return {"type": "function", "function": {k: tool[k] for k in keys if k in tool}}


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise BadRequest(
        "tool_choice: only 'none', 'auto', 'required' or a function by name",
        param="tool_choice",
        code="invalid_value",
    )


def _response_format(text: dict[str, Any]) -> dict[str, Any] | None:
    fmt = text.get("format")
    if fmt is not None and not isinstance(fmt, dict):
        raise BadRequest("text.format: must be an object", param="text.format", code="invalid_type")
    if fmt is None or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        keys = ("name", "description", "schema", "strict")
        return {"type": "json_schema", "json_schema": {k: fmt[k] for k in keys if k in fmt}}
    raise BadRequest(
        f"text.format.type: {fmt.get('type')!r} is not one of text, json_object, json_schema",
        param="text.format.type",
        code="invalid_value",
    )


def chat_body(request: ResponsesRequest, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat-completions body for `request`, after the conversation so far (`history`, the
    previous response's messages; its instructions are not carried over, as with OpenAI)."""
    messages = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    messages += history + input_messages(request.input)
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.tools:
        body["tools"] = [_tool(t, i) for i, t in enumerate(request.tools)]
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice(request.tool_choice)
    if request.text and (fmt := _response_format(request.text)) is not None:
        body["response_format"] = fmt
    if request.max_output_tokens is not None:
        body["max_tokens"] = request.max_output_tokens
    if request.reasoning and isinstance(request.reasoning.get("effort"), str):
        body["reasoning_effort"] = request.reasoning["effort"]
    for same in ("metadata", "parallel_tool_calls", "temperature", "top_p", "user", "stream"):
        if getattr(request, same) is not None:
            body[same] = getattr(request, same)
    return body


def conversation(chat: dict[str, Any], answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The turns a later `previous_response_id` continues from: the chat body's messages but the
    instructions (a system message first), then the answer's message."""
    messages = list(chat["messages"])
    if messages and messages[0]["role"] == "system":
        messages = messages[1:]
    message = {k: v for k, v in answer.items() if k in ("role", "content", "tool_calls") and v}
    return [*messages, {"role": "assistant", "content": None, **message}]


# -- the answer, back ------------------------------------------------------------------------


def item_id(kind: str, response_id: str, n: int = 0) -> str:
    """An output item's id, from its response's: `msg_…`, `fc_…`."""
    suffix = response_id.removeprefix("resp_")
    return f"{kind}_{suffix}" + (f"_{n}" if n else "")


def message_item(response_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id("msg", response_id),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def function_call_item(
    response_id: str, n: int, call: dict[str, Any], status: str = "completed"
) -> dict[str, Any]:
    fn = call.get("function") or {}
    return {
        "id": item_id("fc", response_id, n),
        "type": "function_call",
        "status": status,
        "call_id": call.get("id") or item_id("call", response_id, n),
        "name": fn.get("name", ""),
        "arguments": fn.get("arguments", ""),
    }


def output_items(response_id: str, message: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat answer's message as Response output items: its text, then its tool calls."""
    out = []
    if message.get("content"):
        out.append(message_item(response_id, message["content"]))
    if message.get("refusal"):
        refusal = {"type": "refusal", "refusal": message["refusal"]}
        out.append({**message_item(response_id, ""), "content": [refusal]})
    for n, call in enumerate(message.get("tool_calls") or ()):
        out.append(function_call_item(response_id, n, call))
    return out


def usage(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not chat_usage:
        return None
    tokens_in = chat_usage.get("prompt_tokens") or 0
    tokens_out = chat_usage.get("completion_tokens") or 0
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": tokens_in,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": tokens_out,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": chat_usage.get("total_tokens") or tokens_in + tokens_out,
    }


INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def shell(request: ResponsesRequest, response_id: str, created_at: float) -> dict[str, Any]:
    """The Response object before its answer: what it was asked, status in_progress."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(created_at),
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": request.model,
        "output": [],
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.previous_response_id,
        "reasoning": request.reasoning,
        "store": request.store is not False,
        "temperature": request.temperature,
        "text": request.text or {"format": {"type": "text"}},
        "tool_choice": request.tool_choice or "auto",
        "tools": request.tools or [],
        "top_p": request.top_p,
        "truncation": "disabled",
        "usage": None,
        "user": request.user,
        "metadata": request.metadata or {},
    }


def finished(
    start: dict[str, Any],
    output: list[dict[str, Any]],
    finish_reason: str | None,
    chat_usage: dict[str, Any] | None,
) -> dict[str, Any]:
    """The Response object `start` (a `shell`) with its output: completed, or incomplete when
    the answer was cut at max_output_tokens or filtered."""
    reason = INCOMPLETE.get(finish_reason or "")
    return {
        **start,
        "status": "incomplete" if reason else "completed",
        "incomplete_details": {"reason": reason} if reason else None,
        "output": output,
        "usage": usage(chat_usage),
    }


def response_object(start: dict[str, Any], completion: dict[str, Any]) -> dict[str, Any]:
    """A whole chat completion as the Response object `start` (a `shell`) becomes."""
    choice = (completion.get("choices") or [{}])[0]
    output = output_items(start["id"], choice.get("message") or {})
    return finished(start, output, choice.get("finish_reason"), completion.get("usage"))

"""The Responses API sent as is to an upstream that speaks it (OpenAI, Azure OpenAI): the kept
conversation as input items, and the upstream's Response (whole, or its stream events) read back
as the chat completion the capture stores, so curation, training and evaluation read one shape.

Pure functions over the converters of the bridge (responses.py): no I/O, no second reading of
an item's meaning. Never sends an item id upstream: the upstream keeps nothing (`store: false`).
"""

from __future__ import annotations

from typing import Any

from .responses import INCOMPLETE, TEXT_PARTS, function_call_item, input_messages

# a Response's incomplete reason as a chat finish_reason (the inverse of INCOMPLETE)
FINISH = {reason: finish for finish, reason in INCOMPLETE.items()}
TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def _input_part(part: dict[str, Any]) -> dict[str, Any]:
    if part.get("type") == "image_url":
        image = part.get("image_url") or {}
        out = {"type": "input_image", "image_url": image.get("url")}
        return {**out, "detail": image["detail"]} if "detail" in image else out
    return {"type": "input_text", "text": part.get("text", "")}


def history_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Kept chat turns (a `conversation`) as Responses input items, which `input_messages` reads
    back as the same turns: an assistant's text and its function calls, without ids."""
    items: list[dict[str, Any]] = []
    for message in messages:
        role, content = message["role"], message.get("content")
        if role == "tool":
            output = content if isinstance(content, str) else ""
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.get("tool_call_id"),
                    "output": output,
                }
            )
        elif role == "assistant":
            if content:  # a string: assistant text parts are output_text, never input_text
                items.append({"role": "assistant", "content": content})
            for n, call in enumerate(message.get("tool_calls") or ()):
                item = function_call_item("resp_", n, call)
                items.append({k: v for k, v in item.items() if k not in ("id", "status")})
        elif isinstance(content, list):
            items.append({"role": role, "content": [_input_part(p) for p in content]})
        else:
            items.append({"role": role, "content": content or ""})
    return items


def input_items(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A request's `input` as a list of items (a string is one user message)."""
    return [{"role": "user", "content": value}] if isinstance(value, str) else list(value)


def answer_message(output: list[dict[str, Any]]) -> dict[str, Any]:
    """A Response's output items as one chat assistant message: its text, its refusal, its
    function calls (read by `input_messages`); reasoning and built-in tool items have no chat
    form and are left out, and so is what an upstream sent ill-typed (it answered: its call is
    captured, not refused)."""
    refusal = ""
    kept: list[dict[str, Any]] = []
    for item in output:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "function_call":
            if all(
                isinstance(item.get(k) or "", str) for k in ("call_id", "id", "name", "arguments")
            ):
                kept.append(item)
        elif kind == "message":
            parts = [p for p in item.get("content") or () if isinstance(p, dict)]
            refusal += "".join(p["refusal"] for p in parts if isinstance(p.get("refusal"), str))
            texts = [
                p for p in parts if p.get("type") in TEXT_PARTS and isinstance(p.get("text"), str)
            ]
            kept.append({**item, "role": "assistant", "content": texts})
    text = ""
    calls: list[dict[str, Any]] = []
    for message in input_messages(kept):
        text += message.get("content") or ""
        calls += message.get("tool_calls") or []
    answer: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if refusal:
        answer["refusal"] = refusal
    if calls:
        answer["tool_calls"] = calls
    return answer


def chat_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Response's usage as chat usage (the inverse of `responses.usage`)."""
    if not usage:
        return None
    tokens_in = usage.get("input_tokens") or 0
    tokens_out = usage.get("output_tokens") or 0
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "prompt_tokens": tokens_in,
        "completion_tokens": tokens_out,
        "total_tokens": usage.get("total_tokens") or tokens_in + tokens_out,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def finish_reason(response: dict[str, Any], message: dict[str, Any]) -> str:
    reason = (response.get("incomplete_details") or {}).get("reason")
    if reason in FINISH:
        return FINISH[reason]
    return "tool_calls" if message.get("tool_calls") else "stop"


def completion_of(response: dict[str, Any]) -> dict[str, Any]:
    """A whole Response as the chat completion a chat upstream would have answered."""
    message = answer_message(response.get("output") or [])
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": finish_reason(response, message),
        "logprobs": None,
    }
    completion: dict[str, Any] = {
        "id": response.get("id"),
        "object": "chat.completion",
        "created": response.get("created_at"),
        "model": response.get("model"),
        "choices": [choice],
    }
    if usage := chat_usage(response.get("usage")):
        completion["usage"] = usage
    return completion


class ChatChunks:
    """A Responses stream's events as the chat chunks they add up to, for the capture's
    accumulator: text and refusal deltas as they come (the time to first token, an answer cut
    off midway), each function call once done, finish reason and usage at the end."""

    def __init__(self) -> None:
        self.calls = 0

    def of(self, event: dict[str, Any]) -> dict[str, Any] | None:
        kind = event.get("type")
        if kind == "response.created":
            response = event.get("response") or {}
            created = response.get("created_at")
            return {"id": response.get("id"), "model": response.get("model"), "created": created}
        if kind == "response.output_text.delta":
            return _delta({"content": event.get("delta", "")})
        if kind == "response.refusal.delta":
            return _delta({"refusal": event.get("delta", "")})
        item = event.get("item") or {}
        if kind == "response.output_item.done" and item.get("type") == "function_call":
            (call,) = answer_message([item])["tool_calls"]
            self.calls += 1
            return _delta({"tool_calls": [{"index": self.calls - 1, **call}]})
        if kind in ("response.completed", "response.incomplete"):
            response = event.get("response") or {}
            message = answer_message(response.get("output") or [])
            chunk = _delta({}, finish_reason(response, message))
            if usage := chat_usage(response.get("usage")):
                chunk["usage"] = usage
            return chunk
        return None


def _delta(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

"""Captured calls -> OpenAI chat fine-tuning examples (one per teacher answer).

Keeps system/user/assistant turns, tool calls and tool results, and the request's tool
definitions, in the shape OpenAI's fine-tuning accepts. Never drops a turn silently: a call that
cannot be normalised is rejected by the `incomplete` filter before it gets here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..answers import content_text, message_text
from ..store.records import Call

_TEXT_PARTS = ("text", "input_text", "output_text")


@dataclass(frozen=True, slots=True)
class Example:
    """One fine-tuning example: the conversation up to and including the teacher's answer."""

    call_id: str
    created_at: float
    messages: tuple[dict[str, Any], ...]
    tools: tuple[dict[str, Any], ...] = ()
    intent: str | None = None  # metadata.intent when the caller sent one
    group: str | None = None  # metadata.group: rows of one group share a split

    def to_json(self) -> dict[str, Any]:
        """The JSONL line OpenAI's chat fine-tuning expects."""
        line: dict[str, Any] = {"messages": list(self.messages)}
        if self.tools:
            line["tools"] = list(self.tools)
        return line

    def text(self) -> str:
        """Every turn's text (tool arguments included), for dedupe and intent clustering."""
        return "\n".join(message_text(m) for m in self.messages)

    def dedupe_text(self) -> str:
        return dedupe_text(self.messages)

    def user_text(self) -> str:
        return user_text(self.messages)


def dedupe_text(messages: Sequence[dict[str, Any]]) -> str:
    """The turns without the system prompt: one long shared system prompt would otherwise
    make every pair of conversations look alike."""
    return "\n".join(message_text(m) for m in messages if m["role"] != "system")


def request_messages(request: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """A request's turns in fine-tuning shape, before the teacher answered them."""
    messages = request.get("messages") if isinstance(request, dict) else None
    return tuple(normalize_message(m) for m in messages or () if isinstance(m, dict))


def user_text(messages: Sequence[dict[str, Any]]) -> str:
    """The user turns' text: what a retold case repeats, whatever the answer."""
    return "\n".join(message_text(m) for m in messages if m["role"] == "user")


def _content(content: Any) -> Any:
    # Text-only part lists become one string; anything else (images) is kept as parts.
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") in _TEXT_PARTS for p in content
    ):
        return content_text(content)
    return content


def normalize_message(message: dict[str, Any]) -> dict[str, Any]:
    """One message in fine-tuning shape; unknown fields (audio, refusal=None...) are dropped."""
    role = message.get("role", "user")
    if role == "developer":
        role = "system"
    out: dict[str, Any] = {"role": role}
    content = _content(message.get("content"))
    # An assistant turn that only calls tools carries no content key at all.
    if role != "assistant" or content not in (None, "") or not message.get("tool_calls"):
        out["content"] = "" if content is None else content
    if message.get("name"):
        out["name"] = message["name"]
    if role == "assistant" and message.get("tool_calls"):
        out["tool_calls"] = [
            {
                "id": tc.get("id", f"call_{i}"),
                "type": tc.get("type", "function"),
                "function": {
                    "name": (tc.get("function") or {}).get("name", ""),
                    "arguments": (tc.get("function") or {}).get("arguments", "{}"),
                },
            }
            for i, tc in enumerate(message["tool_calls"])
        ]
    if role == "assistant" and message.get("function_call"):  # legacy function calling
        out["function_call"] = message["function_call"]
    if role == "tool" and message.get("tool_call_id"):
        out["tool_call_id"] = message["tool_call_id"]
    return out


def answer_message(call: Call) -> dict[str, Any] | None:
    """The teacher's answer: the first choice's message, or None when there is none."""
    response = call.response or {}
    choices = response.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    return message if isinstance(message, dict) else None


def _tools(request: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    tools = request.get("tools")
    if isinstance(tools, list):
        return tuple(t for t in tools if isinstance(t, dict))
    functions = request.get("functions")  # legacy: the same definitions, older envelope
    if isinstance(functions, list):
        return tuple({"type": "function", "function": f} for f in functions)
    return ()


def to_example(call: Call) -> Example:
    """The call as a fine-tuning example. Assumes the call passed the filters."""
    messages = [normalize_message(m) for m in call.request.get("messages", [])]
    answer = answer_message(call)
    if answer is not None:
        messages.append(normalize_message({**answer, "role": "assistant"}))
    meta = call.metadata if isinstance(call.metadata, dict) else {}
    intent, group = meta.get("intent"), meta.get("group")
    return Example(
        call_id=call.id,
        created_at=call.created_at,
        messages=tuple(messages),
        tools=_tools(call.request),
        intent=str(intent) if intent not in (None, "") else None,
        group=str(group) if group not in (None, "") else None,
    )

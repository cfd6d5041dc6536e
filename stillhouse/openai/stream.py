"""Reassemble a streamed chat completion from its chunks, for capture.

The client gets every chunk as it comes; this keeps the pieces so the stored call holds the same
complete response a non-streaming request would have returned.
"""

from __future__ import annotations

import time
from typing import Any


class StreamAccumulator:
    def __init__(self, started: float) -> None:
        self.started = started
        self.first_token_at: float | None = None
        self.id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.usage: dict[str, Any] | None = None
        self.extension: dict[str, Any] | None = None  # a local model's `stillhouse` field
        self.chunks = 0
        self.content_chunks = 0  # chunks that carried output: a token count when usage is absent
        self._choices: dict[int, dict[str, Any]] = {}

    def add(self, chunk: dict[str, Any]) -> None:
        self.chunks += 1
        self.id = self.id or chunk.get("id")
        self.model = self.model or chunk.get("model")
        self.created = self.created or chunk.get("created")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if isinstance(chunk.get("stillhouse"), dict):
            self.extension = chunk["stillhouse"]
        for choice in chunk.get("choices") or ():
            self._add_choice(choice)

    def _add_choice(self, choice: dict[str, Any]) -> None:
        index = int(choice.get("index", 0))
        acc = self._choices.setdefault(
            index,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": {},
                "logprobs": [],
                "finish_reason": None,
                "refusal": None,
            },
        )
        delta = choice.get("delta") or {}
        if delta.get("role"):
            acc["role"] = delta["role"]
        if delta.get("content") or delta.get("tool_calls"):
            self.content_chunks += 1
            self._mark_first_token()
        if delta.get("content"):
            acc["content"] = (acc["content"] or "") + delta["content"]
        if delta.get("refusal"):
            acc["refusal"] = (acc["refusal"] or "") + delta["refusal"]
        for call in delta.get("tool_calls") or ():
            slot = acc["tool_calls"].setdefault(
                int(call.get("index", 0)),
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            slot["id"] = call.get("id") or slot["id"]
            slot["type"] = call.get("type") or slot["type"]
            fn = call.get("function") or {}
            slot["function"]["name"] += fn.get("name") or ""
            slot["function"]["arguments"] += fn.get("arguments") or ""
        logprobs = choice.get("logprobs") or {}
        acc["logprobs"].extend(logprobs.get("content") or ())
        if choice.get("finish_reason"):
            acc["finish_reason"] = choice["finish_reason"]

    def _mark_first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    @property
    def ttft_ms(self) -> float | None:
        if self.first_token_at is None:
            return None
        return (self.first_token_at - self.started) * 1000

    @property
    def finish_reason(self) -> str | None:
        first = self._choices.get(0)
        return first["finish_reason"] if first else None

    def response(self) -> dict[str, Any]:
        """The chat.completion the chunks add up to."""
        choices = []
        for index in sorted(self._choices):
            acc = self._choices[index]
            message: dict[str, Any] = {
                "role": acc["role"],
                "content": acc["content"],
                "refusal": acc["refusal"],
            }
            if acc["tool_calls"]:
                message["tool_calls"] = [acc["tool_calls"][k] for k in sorted(acc["tool_calls"])]
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "finish_reason": acc["finish_reason"],
                    "logprobs": {"content": acc["logprobs"]} if acc["logprobs"] else None,
                }
            )
        out: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.usage:
            out["usage"] = self.usage
        if self.extension:
            out["stillhouse"] = self.extension
        return out

"""Chat-completion chunks as the Responses API's stream events, in the order the OpenAI SDK reads
them: response.created, response.in_progress, then per output item output_item.added,
(content_part.added, output_text.delta…, output_text.done, content_part.done |
function_call_arguments.delta…, function_call_arguments.done), output_item.done, and last
response.completed (or .incomplete); every event numbered by `sequence_number`.

A pure state machine: chunks in, event dicts out (`sse_event` frames one). No I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

from .responses import finished, function_call_item, message_item


def sse_event(event: dict[str, Any]) -> bytes:
    """One event as the Responses stream frames it: its type named, then its data."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class ResponseEvents:
    def __init__(self, start: dict[str, Any], sequence: int = 0) -> None:
        self.start = start  # the Response shell (openai.responses.shell)
        self.sequence = sequence  # the next event's number
        self.items: list[dict[str, Any]] = []  # output items, in the order they opened
        self._message: int | None = None  # index of the text item, once open
        self._tool_items: dict[int, int] = {}  # chat tool_call index -> output index
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def opening(self) -> list[dict[str, Any]]:
        return [
            self._event("response.created", response=self.start),
            self._event("response.in_progress", response=self.start),
        ]

    def add(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The events one chat chunk makes (none for a usage-only chunk)."""
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        out: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or ():
            if int(choice.get("index", 0)) != 0:
                continue  # a Response has one answer
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out += self._text(delta["content"])
            for call in delta.get("tool_calls") or ():
                out += self._arguments(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def _text(self, text: str) -> list[dict[str, Any]]:
        out = []
        if self._message is None:
            self._message = len(self.items)
            item = message_item(self.start["id"], "", "in_progress")
            self.items.append(item)
            out.append(self._added(self._message))
            part = item["content"][0]
            out.append(self._part("response.content_part.added", self._message, part))
        item = self.items[self._message]
        item["content"][0]["text"] += text
        out.append(
            self._event(
                "response.output_text.delta",
                item_id=item["id"],
                output_index=self._message,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return out

    def _arguments(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        n = int(call.get("index", 0))
        fn = call.get("function") or {}
        if n not in self._tool_items:
            self._tool_items[n] = len(self.items)
            name = fn.get("name", "")
            opened = {"id": call.get("id"), "function": {"name": name, "arguments": ""}}
            self.items.append(function_call_item(self.start["id"], n, opened, "in_progress"))
            out.append(self._added(self._tool_items[n]))
        index = self._tool_items[n]
        item = self.items[index]
        if fn.get("name") and not item["name"]:
            item["name"] = fn["name"]
        if fn.get("arguments"):
            item["arguments"] += fn["arguments"]
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=fn["arguments"],
                )
            )
        return out

    def _added(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        shown = {**item, "content": []} if item["type"] == "message" else dict(item)
        return self._event("response.output_item.added", output_index=index, item=shown)

    def _part(self, kind: str, index: int, part: dict[str, Any]) -> dict[str, Any]:
        item_id = self.items[index]["id"]
        return self._event(
            kind, item_id=item_id, output_index=index, content_index=0, part=dict(part)
        )

    def closing(self) -> list[dict[str, Any]]:
        """Each open item done, then the whole Response (`self.response()`)."""
        out = []
        for index, item in enumerate(self.items):
            item["status"] = "completed"
            if item["type"] == "message":
                part = item["content"][0]
                out.append(
                    self._event(
                        "response.output_text.done",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        text=part["text"],
                        logprobs=[],
                    )
                )
                out.append(self._part("response.content_part.done", index, part))
            else:
                out.append(
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=index,
                        name=item["name"],
                        arguments=item["arguments"],
                    )
                )
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        response = self.response()
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        out.append(self._event(kind, response=response))
        return out

    def response(self) -> dict[str, Any]:
        return finished(self.start, self.items, self.finish_reason, self.usage)

    def failed(self, error: dict[str, Any]) -> list[dict[str, Any]]:
        """An upstream error mid-stream: an `error` event, then response.failed."""
        message, code = error.get("message", ""), error.get("code")
        response = {**self.start, "status": "failed", "output": self.items}
        response["error"] = {"code": code or "server_error", "message": message}
        return [
            self._event("error", code=code, message=message, param=error.get("param")),
            self._event("response.failed", response=response),
        ]

"""Tool calls as a chat model reads and writes them: Hermes blocks in ChatML, the way Qwen2.5 is
trained — the tools listed in the system prompt inside `<tools></tools>`, each call the assistant
makes as `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, each tool result as a
`<tool_response>` in a user turn.

The one rendering: training (train/lora.py) and both engines (engine/) turn OpenAI messages into
plain role/content messages here, before the model's own chat template, so what a student is
trained on is what it is prompted with, whatever its template knows of tools. The one parser:
the engines read a student's calls back out of its text with `ToolCallSplitter`, and the answers
kernel compares them. Ground floor: imports nothing of the project.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
# Qwen2.5's own words (its chat template), so a Qwen student reads the prompt it was tuned on.
TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call: its name and its arguments (a JSON object, parsed)."""

    name: str
    arguments: dict[str, Any]

    def openai(self, index: int | None = None) -> dict[str, Any]:
        """The call in OpenAI's shape (`message.tool_calls[i]`; with `index`, a stream delta's),
        its arguments a JSON string and a fresh id."""
        out: dict[str, Any] = {} if index is None else {"index": index}
        out.update(
            id=f"call_{uuid.uuid4().hex[:24]}",
            type="function",
            function={
                "name": self.name,
                "arguments": json.dumps(self.arguments, ensure_ascii=False),
            },
        )
        return out


# -- rendering ---------------------------------------------------------------------------------
def _block(name: str, arguments: Any) -> str:
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{OPEN}\n{body}\n{CLOSE}"


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _arguments(raw: Any) -> Any:
    """A call's arguments as an object: OpenAI sends a JSON string. One that is not JSON is
    kept as the string it is (the gateway refuses such a request; a stored one renders as is)."""
    if isinstance(raw, str):
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError:
            return raw
    return {} if raw is None else raw


def message_calls(message: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, arguments) of each call an OpenAI assistant message makes (legacy function_call
    included)."""
    out = []
    for tc in message.get("tool_calls") or ():
        fn = (tc.get("function") or {}) if isinstance(tc, dict) else {}
        out.append((str(fn.get("name", "")), _arguments(fn.get("arguments"))))
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        out.append((str(legacy.get("name", "")), _arguments(legacy.get("arguments"))))
    return out


def assistant_text(message: dict[str, Any]) -> str:
    """An assistant message as the model says it: its content, then each call as a block."""
    blocks = [_block(name, arguments) for name, arguments in message_calls(message)]
    return "\n".join(p for p in (_text(message.get("content")), *blocks) if p)


def tools_prompt(tools: Sequence[dict[str, Any]]) -> str:
    """The tools block of the system prompt: one tool definition a line, as sent."""
    lines = "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
    return TOOLS_HEADER + lines + TOOLS_FOOTER


def chat_messages(
    messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """OpenAI messages as plain role/content messages any chat template renders: the tools in
    the system prompt, assistant calls as `<tool_call>` blocks, tool results (consecutive ones
    together) as `<tool_response>` blocks in a user turn. A conversation without tools or calls
    comes back as it went in, so plain tasks render exactly as before."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "assistant" and message_calls(message):
            out.append({"role": "assistant", "content": assistant_text(message)})
        elif role in ("tool", "function"):
            block = f"<tool_response>\n{_text(message.get('content'))}\n</tool_response>"
            if out and out[-1].get("tool_results"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "tool_results": True})
        else:
            out.append(dict(message))
    for message in out:
        message.pop("tool_results", None)
    if tools:
        prompt = tools_prompt(tools)
        if out and out[0].get("role") == "system":
            system = _text(out[0].get("content"))
            out[0] = {**out[0], "content": f"{system}\n\n{prompt}" if system else prompt}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


# -- parsing -----------------------------------------------------------------------------------
def parse_call(body: str) -> ToolCall | None:
    """The call inside one block, or None when it is not one: not JSON, no name, or arguments
    that are not a JSON object (a string holding one is read too)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return None
    arguments = value.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            return None
    return ToolCall(value["name"], arguments) if isinstance(arguments, dict) else None


def _held(text: str) -> int:
    """How many trailing characters might begin a block (or are space before one)."""
    keep = 0
    for n in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if text.endswith(OPEN[:n]):
            keep = n
            break
    body = text[: len(text) - keep]
    return keep + len(body) - len(body.rstrip())


class ToolCallSplitter:
    """A model's text, fed as it comes, split into content and calls: `feed` and `finish` return
    the pieces now known (strings of content, ToolCall), holding back only what might still
    turn into a block. A block that is not a call (arguments that are not JSON, say) is given
    back as the content it was, never as a broken call. Streamed or whole (`split`), one text
    splits one way."""

    def __init__(self) -> None:
        self._buffer = ""
        self._inside = False
        self._gap = ""  # the space dropped before the open block, given back if it is no call
        self._after_call = False  # the space after a call is dropped too
        self._said = False  # whether any content went out
        self.calls = 0

    def _content(self, text: str, out: list[str | ToolCall]) -> None:
        """Content out; text after a call is set off from text before it by one line break."""
        if self._after_call:
            text = text.lstrip()
            self._after_call = not text
            if text and self._said:
                text = "\n" + text
        if text:
            self._said = True
            out.append(text)

    def feed(self, text: str) -> list[str | ToolCall]:
        self._buffer += text
        out: list[str | ToolCall] = []
        while True:
            if self._inside:
                end = self._buffer.find(CLOSE)
                if end < 0:
                    return out
                body, self._buffer = self._buffer[:end], self._buffer[end + len(CLOSE) :]
                self._close(body, CLOSE, out)
                continue
            start = self._buffer.find(OPEN)
            if start < 0:
                keep = _held(self._buffer)
                ready = self._buffer[: len(self._buffer) - keep]
                self._buffer = self._buffer[len(ready) :]
                self._content(ready, out)
                return out
            before = self._buffer[:start]
            self._content(before.rstrip(), out)
            self._gap = before[len(before.rstrip()) :]
            self._buffer, self._inside = self._buffer[start + len(OPEN) :], True

    def finish(self) -> list[str | ToolCall]:
        """What is left once the text is complete: an unclosed last block is read as a call
        when it holds one (a model may stop right after the JSON)."""
        out: list[str | ToolCall] = []
        rest, self._buffer = self._buffer, ""
        if self._inside:
            self._close(rest, "", out)
        else:
            self._content(rest.rstrip() if self.calls else rest, out)
        return out

    def _close(self, body: str, closer: str, out: list[str | ToolCall]) -> None:
        self._inside = False
        call = parse_call(body.strip())
        if call is None:  # not a call: its text is the answer's content, as the model wrote it
            self._content(self._gap + OPEN + body + closer, out)
        else:
            self.calls += 1
            self._after_call = True
            out.append(call)
        self._gap = ""


def split(text: str) -> tuple[str | None, list[ToolCall]]:
    """(content, calls) of a whole answer; content is None when only calls remain. Text without
    a valid block comes back unchanged."""
    if OPEN not in text:
        return text, []
    splitter = ToolCallSplitter()
    pieces = splitter.feed(text) + splitter.finish()
    calls = [p for p in pieces if isinstance(p, ToolCall)]
    content = "".join(p for p in pieces if isinstance(p, str))
    if not calls:
        return text, []
    return (content or None), calls


def calls_in(text: str) -> list[ToolCall]:
    """The calls an answer's text makes ([] for a plain answer)."""
    return split(text)[1] if OPEN in text else []

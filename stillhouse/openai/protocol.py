"""The OpenAI chat-completions request as Stillhouse checks it, wherever it arrives (the gateway,
`serve-model`): fields in the official order, strict types, unknown fields kept as sent.

Validation only rejects what is malformed: unknown fields are kept and passed upstream as sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from ..errors import BadRequest

# orjson reads 1,024 levels but writes only 254, and a stored call wraps the body in a few more:
# a deeper body parsed, reached the upstream and then failed to be answered or captured.
MAX_DEPTH = 128

M = TypeVar("M", bound=BaseModel)


def _json_arguments(value: str) -> str:
    """A call's arguments must be a JSON document: a student is trained on them, and a teacher
    must not be sent what no model could have written."""
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise PydanticCustomError(
            "invalid_json", "the arguments are not valid JSON ({error})", {"error": str(err)}
        ) from None
    return value


# strict: a field of the wrong JSON type is a 400, never coerced (`"top_p": false` is not 0),
# because the body goes upstream as sent.
class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    name: str = Field(min_length=1)
    arguments: str

    _arguments = field_validator("arguments")(_json_arguments)


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    id: str | None = None
    type: str = "function"
    function: FunctionCall


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    function_call: FunctionCall | None = None  # legacy function calling


class ChatCompletionRequest(BaseModel):
    """Fields in the official order; anything else is allowed and passed through."""

    model_config = ConfigDict(extra="allow", strict=True)

    messages: list[Message] = Field(min_length=1)
    model: str = Field(min_length=1)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    metadata: dict[str, Any] | None = None
    n: int | None = Field(None, ge=1, le=128)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    user: str | None = None


def _param(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object, not nested deeper than MAX_DEPTH; else BadRequest."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise BadRequest(f"request body is not valid JSON: {err}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    # Only a body with that many brackets can nest that deep: the walk is skipped for nearly all.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(body) > MAX_DEPTH:
        raise BadRequest(f"request body nests deeper than {MAX_DEPTH} levels", code="invalid_json")
    return body


def validated(model: type[M], body: dict[str, Any]) -> M:
    """`body` checked against `model`; BadRequest names the first bad field (`param`)."""
    try:
        return model.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        param = _param(tuple(first["loc"]))
        kind = "missing_required_parameter" if first["type"] == "missing" else "invalid_value"
        raise BadRequest(f"{param}: {first['msg']}", param=param, code=kind) from None


def parse_request(raw: bytes) -> tuple[dict[str, Any], ChatCompletionRequest]:
    """The body as sent (to forward) and as checked; BadRequest names the first bad field."""
    body = load_body(raw)
    return body, validated(ChatCompletionRequest, body)


def _depth(value: Any) -> int:
    """How deeply `value` nests (a scalar: 0), without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            todo.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def apply_prompt(
    prompt: dict[str, Any], messages: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The request as the prompt candidate sends it: the distilled system prompt (replacing the
    request's own, which it already contains), the few-shot turns, then the conversation."""
    out: list[dict[str, Any]] = []
    if prompt.get("system"):
        out.append({"role": "system", "content": prompt["system"]})
    for shot in prompt.get("examples", []):
        out.extend(shot["messages"])
    out.extend(m for m in messages if m["role"] != "system")
    return out


def constrain(body: dict[str, Any], schema: dict[str, Any] | None, name: str) -> bool:
    """Ask for answers under the task's `response_schema` (a `json_schema` response_format, which
    local engines honour token by token) unless the request already names a format or offers
    tools (a tool call is not the schema's JSON); True when it was added."""
    if not schema or body.get("response_format") or body.get("tools"):
        return False
    label = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "answer"  # OpenAI's rule for names
    body["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": label, "schema": schema},
    }
    return True

"""The OpenAI chat-completions request as the gateway checks it; where task and session come from.

Validation only rejects what is malformed: unknown fields are kept and passed upstream as sent.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BadRequest

TASK_HEADER = "x-stillhouse-task"
SESSION_HEADER = "x-stillhouse-session"
# metadata keys that are ours: read by the gateway, not forwarded upstream
OWN_METADATA = ("task", "session_id")
# metadata keys the gateway itself writes on a stored call (the candidate that answered, the call
# a fallback or shadow answer belongs to, ...). The rollout gate and curation trust them, so a
# caller's values never land there: they are kept under `metadata.client` instead.
RESERVED_METADATA = frozenset(
    {"candidate", "fallback_of", "shadow_of", "usage_estimated", "routed_intent", "client"}
)
# orjson reads 1,024 levels but writes only 254, and a stored call wraps the body in a few more:
# a deeper body parsed, reached the upstream and then failed to be answered or captured.
MAX_DEPTH = 128


# strict: a field of the wrong JSON type is a 400, never coerced (`"top_p": false` is not 0),
# because the body goes upstream as sent.
class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


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


def parse_request(raw: bytes) -> tuple[dict[str, Any], ChatCompletionRequest]:
    """The body as sent (to forward) and as checked; BadRequest names the first bad field."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise BadRequest(f"request body is not valid JSON: {err}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    # Only a body with that many brackets can nest that deep: the walk is skipped for nearly all.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(body) > MAX_DEPTH:
        raise BadRequest(f"request body nests deeper than {MAX_DEPTH} levels", code="invalid_json")
    try:
        checked = ChatCompletionRequest.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        param = _param(tuple(first["loc"]))
        kind = "missing_required_parameter" if first["type"] == "missing" else "invalid_value"
        raise BadRequest(f"{param}: {first['msg']}", param=param, code=kind) from None
    return body, checked


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


def call_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """The metadata to store with a call: the caller's, with any value of a key the gateway
    reserves (RESERVED_METADATA) moved under `client`, so a caller cannot pose as a candidate's
    answer (and poison its rollout gate) or as a fallback."""
    out = dict(metadata or {})
    moved = {k: out.pop(k) for k in sorted(RESERVED_METADATA & out.keys())}
    if moved:
        out["client"] = moved
    return out


def header_value(text: str) -> str:
    """`text` fit for a response header: printable ASCII as it is, anything else (non-latin-1
    characters, CR/LF, other controls) percent-encoded as UTF-8. A header the server cannot
    encode was a 500, and a CR/LF one a dropped connection, after the upstream had answered."""
    if text.isascii() and text.isprintable():
        return text
    return quote(text, safe=" !\"#$&'()*+,/:;<=>?@[\\]^_`{|}~")


def task_of(request: ChatCompletionRequest, headers: Any) -> str:
    """Header X-Stillhouse-Task, else metadata.task, else `model`."""
    header = headers.get(TASK_HEADER)
    if header:
        return str(header)
    meta_task = (request.metadata or {}).get("task")
    return str(meta_task) if meta_task else request.model


def session_of(request: ChatCompletionRequest, headers: Any) -> str | None:
    """Header X-Stillhouse-Session, else metadata.session_id, else `user`."""
    header = headers.get(SESSION_HEADER)
    if header:
        return str(header)
    meta_session = (request.metadata or {}).get("session_id")
    if meta_session:
        return str(meta_session)
    return request.user


def upstream_body(body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    """The request to forward: the upstream's model name, our metadata keys removed."""
    out = dict(body)
    out["model"] = upstream_model
    meta = out.get("metadata")
    if isinstance(meta, dict) and any(k in meta for k in OWN_METADATA):
        rest = {k: v for k, v in meta.items() if k not in OWN_METADATA}
        if rest:
            out["metadata"] = rest
        else:
            del out["metadata"]
    return out

"""Importers: traces from elsewhere -> Call records, so they curate like captured traffic.

Formats: `openai-chat` (fine-tuning JSONL), `stored-completions` (OpenAI Stored Completions
export), `langfuse` (observations export, GENERATION rows) and `otel` (OpenTelemetry GenAI spans).
A record that cannot be read is reported with its line (JSONL) or item (JSON array) number, never
dropped silently; the caller decides whether the rest may land (`stillhouse import` refuses the
whole file unless told `--skip-bad`). Ids derive from the record, so re-importing never duplicates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..errors import StillhouseError
from ..store.records import Call

FORMATS = ("openai-chat", "stored-completions", "langfuse", "otel")


class Skip(Exception):
    """A record that is valid but not a model call (a Langfuse SPAN, a non-GenAI span)."""


@dataclass(frozen=True, slots=True)
class BadRecord:
    line: int  # line number in a JSONL file, item number in a JSON array
    error: str


@dataclass(frozen=True, slots=True)
class ImportResult:
    calls: tuple[Call, ...]
    bad: tuple[BadRecord, ...] = ()
    skipped: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "imported": len(self.calls),
            "skipped": self.skipped,
            "bad": [{"line": b.line, "error": b.error} for b in self.bad],
        }


def _records(text: str) -> Iterator[tuple[int, Any]]:
    """(number, parsed record or the parse error) for a JSON document or JSONL."""
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as err:
            if stripped.startswith("["):  # a JSON array cut short or broken: JSONL never is one
                yield err.lineno, ValueError(f"the JSON document is broken: {err.msg}")
                return
            doc = None  # not one document: read it as JSONL below
        if isinstance(doc, list):
            yield from enumerate(doc, 1)
            return
        if isinstance(doc, dict) and isinstance(doc.get("data"), list):
            yield from enumerate(doc["data"], 1)  # an API list page
            return
        if isinstance(doc, dict) and "resourceSpans" in doc:
            yield from enumerate(_otlp_spans(doc), 1)
            return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield number, orjson.loads(line)
        except orjson.JSONDecodeError as err:
            yield number, ValueError(f"invalid JSON: {err}")


def _id(task: str, fmt: str, record: Any, own_id: Any = None) -> str:
    basis = f"{fmt}:{own_id}" if own_id else orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(
        f"{task}\n".encode() + (basis if isinstance(basis, bytes) else basis.encode())
    )
    return f"call_{digest.hexdigest()[:32]}"


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _messages(value: Any, what: str) -> list[dict[str, Any]]:
    _need(
        isinstance(value, list) and bool(value) and all(isinstance(m, dict) for m in value),
        f"{what} must be a non-empty list of messages",
    )
    for m in value:
        _need(isinstance(m.get("role"), str), f"{what}: every message needs a role")
    return list(value)


def _response(message: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    finish = finish or ("tool_calls" if message.get("tool_calls") else "stop")
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# -- openai-chat --------------------------------------------------------------------------------
def _openai_chat(record: Any, task: str, now: float) -> Call:
    _need(isinstance(record, dict), "not a JSON object")
    messages = _messages(record.get("messages"), "messages")
    answer = messages[-1]
    _need(answer.get("role") == "assistant", "the last message must be the assistant's answer")
    request: dict[str, Any] = {"model": task, "messages": messages[:-1]}
    for key in ("tools", "parallel_tool_calls", "functions"):
        if key in record:
            request[key] = record[key]
    return Call(
        id=_id(task, "openai-chat", record),
        task=task,
        request=request,
        response=_response(answer),
        finish_reason=_response(answer)["choices"][0]["finish_reason"],
        route_reason="import:openai-chat",
        created_at=now,
        metadata={"source": "openai-chat"},
    )


# -- stored-completions -------------------------------------------------------------------------
def _stored_completion(record: Any, task: str, now: float) -> Call:
    _need(isinstance(record, dict), "not a JSON object")
    choices = record.get("choices")
    _need(isinstance(choices, list) and bool(choices), "no choices")
    inputs = record.get("messages") or record.get("input_messages")
    if isinstance(inputs, dict):  # the /messages endpoint's list page
        inputs = inputs.get("data")
    if inputs is None and isinstance(record.get("request"), dict):
        inputs = record["request"].get("messages")
    messages = _messages(inputs, "messages (the request's input messages)")
    response = {k: v for k, v in record.items() if k not in ("messages", "input_messages")}
    usage = record.get("usage") or {}
    meta = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    return Call(
        id=_id(task, "stored-completions", record, record.get("id")),
        task=task,
        request={"model": record.get("model", task), "messages": messages},
        response=response,
        upstream_model=str(record.get("model", "")),
        provider="openai",
        finish_reason=choices[0].get("finish_reason") if isinstance(choices[0], dict) else None,
        route_reason="import:stored-completions",
        created_at=_epoch(record.get("created")) or now,
        input_tokens=usage.get("prompt_tokens"),
        output_tokens=usage.get("completion_tokens"),
        metadata={**(meta or {}), "source": "stored-completions"},
    )


# -- langfuse -----------------------------------------------------------------------------------
def _langfuse_output(output: Any) -> dict[str, Any]:
    if isinstance(output, str):
        return {"role": "assistant", "content": output}
    if isinstance(output, list) and output and isinstance(output[-1], dict):
        output = output[-1]
    if isinstance(output, dict):
        if isinstance(output.get("choices"), list) and output["choices"]:
            output = output["choices"][0].get("message") or {}
        if "content" in output or "tool_calls" in output:
            return {**output, "role": "assistant"}
    raise ValueError("output is not an assistant message")


def _langfuse(record: Any, task: str, now: float) -> Call:
    _need(isinstance(record, dict), "not a JSON object")
    if str(record.get("type", "GENERATION")).upper() != "GENERATION":
        raise Skip
    raw_input = record.get("input")
    if isinstance(raw_input, dict):
        raw_input = raw_input.get("messages")
    if isinstance(raw_input, str):
        raw_input = [{"role": "user", "content": raw_input}]
    messages = _messages(raw_input, "input")
    answer = _langfuse_output(record.get("output"))
    start = _epoch(record.get("startTime"))
    end = _epoch(record.get("endTime"))
    first = _epoch(record.get("completionStartTime"))
    usage = record.get("usageDetails") or record.get("usage") or {}
    error = str(record.get("level", "")).upper() == "ERROR"
    meta = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    return Call(
        id=_id(task, "langfuse", record, record.get("id")),
        task=task,
        request={"model": record.get("model") or task, "messages": messages},
        response=_response(answer),
        upstream_model=str(record.get("model") or ""),
        status="error" if error else "ok",
        error=record.get("statusMessage") if error else None,
        route_reason="import:langfuse",
        created_at=start or now,
        latency_ms=(end - start) * 1000 if start and end else None,
        ttft_ms=(first - start) * 1000 if start and first else None,
        input_tokens=usage.get("input", usage.get("promptTokens")),
        output_tokens=usage.get("output", usage.get("completionTokens")),
        session_key=record.get("sessionId"),
        metadata={**(meta or {}), "source": "langfuse", "trace_id": record.get("traceId")},
    )


# -- otel ---------------------------------------------------------------------------------------
def _otlp_spans(doc: dict[str, Any]) -> Iterator[Any]:
    for resource in doc.get("resourceSpans") or []:
        for scope in (
            resource.get("scopeSpans") or resource.get("instrumentationLibrarySpans") or []
        ):
            yield from scope.get("spans") or []


def _any_value(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    if "arrayValue" in value:
        return [_any_value(v) for v in value["arrayValue"].get("values", [])]
    return value


def _attributes(span: dict[str, Any]) -> dict[str, Any]:
    attrs = span.get("attributes") or {}
    if isinstance(attrs, list):  # OTLP JSON: [{"key": ..., "value": {"stringValue": ...}}]
        return {a["key"]: _any_value(a.get("value")) for a in attrs if "key" in a}
    return dict(attrs)


def _from_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A GenAI semantic-conventions message (role + parts) as OpenAI chat messages."""
    role = message.get("role", "user")
    if "parts" not in message:
        return [message]
    texts, calls, out = [], [], []
    for part in message["parts"]:
        kind = part.get("type")
        if kind == "text":
            texts.append(str(part.get("content", "")))
        elif kind == "tool_call":
            args = part.get("arguments", {})
            calls.append(
                {
                    "id": part.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": part.get("name", ""),
                        "arguments": args if isinstance(args, str) else orjson.dumps(args).decode(),
                    },
                }
            )
        elif kind == "tool_call_response":
            response = part.get("response", "")
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": part.get("id", ""),
                    "content": response
                    if isinstance(response, str)
                    else orjson.dumps(response).decode(),
                }
            )
    if texts or calls:
        msg: dict[str, Any] = {"role": role, "content": "\n".join(texts) if texts else None}
        if calls:
            msg["tool_calls"] = calls
        out.insert(0, msg)
    return out


def _json_attr(attrs: dict[str, Any], key: str) -> Any:
    value = attrs.get(key)
    return orjson.loads(value) if isinstance(value, str) else value


def _legacy_messages(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    out = []
    i = 0
    while f"{prefix}.{i}.role" in attrs or f"{prefix}.{i}.content" in attrs:
        out.append(
            {
                "role": attrs.get(f"{prefix}.{i}.role", "assistant"),
                "content": attrs.get(f"{prefix}.{i}.content", ""),
            }
        )
        i += 1
    return out


def _otel(record: Any, task: str, now: float) -> Call:
    _need(isinstance(record, dict), "not a JSON object")
    attrs = _attributes(record)
    if not any(k.startswith("gen_ai.") for k in attrs):
        raise Skip
    try:
        inputs = _json_attr(attrs, "gen_ai.input.messages")
        outputs = _json_attr(attrs, "gen_ai.output.messages")
        system = _json_attr(attrs, "gen_ai.system_instructions")
    except orjson.JSONDecodeError as err:
        raise ValueError(f"gen_ai messages are not JSON: {err}") from None
    if inputs is None:
        messages = _legacy_messages(attrs, "gen_ai.prompt")
        answers = _legacy_messages(attrs, "gen_ai.completion")
    else:
        messages = [
            m for msg in _messages(inputs, "gen_ai.input.messages") for m in _from_parts(msg)
        ]
        answers = [m for msg in outputs or [] for m in _from_parts(msg)]
    if system:
        text = (
            " ".join(p.get("content", "") for p in system) if isinstance(system, list) else system
        )
        messages.insert(0, {"role": "system", "content": str(text)})
    messages = _messages(messages, "input messages")
    _need(bool(answers), "no output messages (gen_ai.output.messages or gen_ai.completion.*)")
    reasons = attrs.get("gen_ai.response.finish_reasons")
    finish = reasons[0] if isinstance(reasons, list) and reasons else None
    if finish is None and outputs and isinstance(outputs[0], dict):
        finish = outputs[0].get("finish_reason")
    start = int(record.get("startTimeUnixNano") or 0) / 1e9 or None
    end = int(record.get("endTimeUnixNano") or 0) / 1e9 or None
    status = record.get("status") or {}
    failed = status.get("code") in (2, "STATUS_CODE_ERROR", "ERROR") or "error.type" in attrs
    model = attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model") or ""
    conversation = attrs.get("gen_ai.conversation.id")
    return Call(
        id=_id(task, "otel", record, record.get("spanId")),
        task=task,
        request={"model": model or task, "messages": messages},
        response=_response({**answers[-1], "role": "assistant"}, finish),
        upstream_model=str(model),
        provider=str(attrs.get("gen_ai.provider.name") or attrs.get("gen_ai.system") or ""),
        status="error" if failed else "ok",
        error=(status.get("message") or attrs.get("error.type") or "error") if failed else None,
        finish_reason=finish,
        route_reason="import:otel",
        created_at=start or now,
        latency_ms=(end - start) * 1000 if start and end else None,
        input_tokens=attrs.get("gen_ai.usage.input_tokens"),
        output_tokens=attrs.get("gen_ai.usage.output_tokens"),
        session_key=conversation,
        metadata={"source": "otel", "trace_id": record.get("traceId")}
        | ({"conversation_id": conversation} if conversation else {}),
    )


PARSERS: dict[str, Callable[[Any, str, float], Call]] = {
    "openai-chat": _openai_chat,
    "stored-completions": _stored_completion,
    "langfuse": _langfuse,
    "otel": _otel,
}


def parse(fmt: str, text: str, task: str, *, now: float | None = None) -> ImportResult:
    """Every record of `text` as a Call; bad records are listed, not raised."""
    parser = PARSERS.get(fmt)
    if parser is None:
        raise StillhouseError(f"unknown import format {fmt!r} (one of {', '.join(FORMATS)})")
    base = time.time() if now is None else now
    calls: list[Call] = []
    bad: list[BadRecord] = []
    skipped = 0
    for number, record in _records(text):
        if isinstance(record, Exception):
            bad.append(BadRecord(number, str(record)))
            continue
        try:
            # Later records count as newer when the format carries no time (dedupe keeps newest).
            calls.append(parser(record, task, base + number * 1e-6))
        except Skip:
            skipped += 1
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            bad.append(BadRecord(number, str(err) or type(err).__name__))
    return ImportResult(calls=tuple(calls), bad=tuple(bad), skipped=skipped)


def parse_file(fmt: str, path: str | Path, task: str) -> ImportResult:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise StillhouseError(f"cannot read {path}: {err}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise StillhouseError(
            f"{path}:{line}: not UTF-8 (byte {data[err.start]:#04x}); nothing imported"
        ) from None
    return parse(fmt, text, task)

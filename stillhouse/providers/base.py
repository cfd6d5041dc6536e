"""What every provider is: a transport with `complete` and `stream` over a shared httpx client.

Requests and responses are OpenAI chat-completion dicts whatever the upstream speaks; a provider
translates at its edge. Failures raise UpstreamError carrying the upstream's status and message.
Retries (429, 5xx, connection errors, with backoff and Retry-After) live here, once for all.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import httpx
import orjson

from ..config import ModelConfig
from ..errors import ConfigError, UpstreamError

Chunk = dict[str, Any]
T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
MAX_BACKOFF = 8.0


class Provider(Protocol):
    name: str
    config: ModelConfig

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """One non-streaming chat completion in the OpenAI response shape."""
        ...

    def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        """OpenAI `chat.completion.chunk` dicts, one per upstream event."""
        ...


def secret_header(config: ModelConfig, model_name: str) -> str | None:
    """The model's API key, resolved now; a missing env var becomes a clear upstream error."""
    if config.api_key is None:
        return None
    try:
        return config.api_key.reveal()
    except ConfigError as err:
        raise UpstreamError(
            f"model '{model_name}' cannot be called: {err}", status=500, code="missing_api_key"
        ) from None


def error_from_response(status: int, content: bytes, headers: httpx.Headers) -> UpstreamError:
    """An UpstreamError from an upstream's error reply (OpenAI or Anthropic shaped, or not)."""
    message = content.decode("utf-8", "replace")[:2000] or f"upstream answered {status}"
    err_type, code, param = "upstream_error", None, None
    try:
        body = orjson.loads(content)
        inner = body.get("error") if isinstance(body, dict) else None
        if isinstance(inner, dict):
            message = str(inner.get("message") or message)
            err_type = str(inner.get("type") or err_type)
            code = inner.get("code")
            param = inner.get("param")
        elif isinstance(inner, str):
            message = inner
    except orjson.JSONDecodeError:
        pass
    err = UpstreamError(
        message,
        status=status,
        type=err_type,
        code=str(code) if code is not None else None,
        param=param,
        retryable=status in RETRYABLE_STATUS,
    )
    err.retry_after = _retry_after(headers)  # type: ignore[attr-defined]
    return err


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    try:
        return float(value) if value else None
    except ValueError:
        return None


def transport_error(err: httpx.HTTPError, model_name: str) -> UpstreamError:
    """Connection refused, reset, timed out: no HTTP answer at all."""
    if isinstance(err, httpx.TimeoutException):
        return UpstreamError(
            f"upstream model '{model_name}' timed out ({type(err).__name__})",
            status=504,
            code="upstream_timeout",
            retryable=True,
        )
    return UpstreamError(
        f"upstream model '{model_name}' unreachable: {type(err).__name__}: {err}",
        status=502,
        code="upstream_unreachable",
        retryable=True,
    )


async def post(
    client: httpx.AsyncClient,
    url: str,
    payload: bytes,
    headers: dict[str, str],
    timeout: httpx.Timeout,
    *,
    stream: bool,
    model_name: str,
) -> httpx.Response:
    """One attempt: the response, or an UpstreamError for a transport failure or a 4xx/5xx."""
    request = client.build_request("POST", url, content=payload, headers=headers, timeout=timeout)
    try:
        response = await client.send(request, stream=stream)
    except httpx.HTTPError as err:
        raise transport_error(err, model_name) from err
    if response.status_code >= 400:
        content = await response.aread()
        await response.aclose()
        raise error_from_response(response.status_code, content, response.headers)
    return response


def bad_reply(model_name: str, what: str) -> UpstreamError:
    return UpstreamError(f"upstream model '{model_name}' {what}", code="bad_upstream_response")


async def sse_data(response: httpx.Response, model_name: str) -> AsyncGenerator[Any, None]:
    """The JSON of each `data:` line of an SSE response (`[DONE]` comes as None); closes it."""
    try:
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            yield None if data == "[DONE]" else orjson.loads(data)
    except httpx.HTTPError as err:
        raise UpstreamError(
            f"upstream model '{model_name}' broke off the stream: {type(err).__name__}",
            code="upstream_stream_cut",
        ) from err
    except orjson.JSONDecodeError:
        raise bad_reply(model_name, "sent a malformed stream event") from None
    finally:
        await response.aclose()


async def with_retries(
    attempt: Callable[[], Awaitable[T]], max_retries: int, *, base_delay: float = 0.25
) -> T:
    """Run `attempt`, retrying retryable UpstreamErrors with exponential backoff and jitter."""
    for n in range(max_retries + 1):
        try:
            return await attempt()
        except UpstreamError as err:
            if not err.retryable or n == max_retries:
                raise
            delay = getattr(err, "retry_after", None)
            if delay is None:
                delay = base_delay * (2**n) * (0.5 + random.random())
            await asyncio.sleep(min(delay, MAX_BACKOFF))
    raise AssertionError("unreachable")  # pragma: no cover

"""What every provider is: a transport with `complete` and `stream` over one shared HTTP session.

Requests and responses are OpenAI chat-completion dicts whatever the upstream speaks; a provider
translates at its edge. Failures raise UpstreamError carrying the upstream's status and message.
Retries (429, 5xx, connection errors, with backoff and Retry-After) live here, once for all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from ..config import ModelConfig
from ..errors import ConfigError, UpstreamError

Chunk = dict[str, Any]
T = TypeVar("T")
log = logging.getLogger("stillhouse.providers")

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
MAX_BACKOFF = 8.0


# SSE lines (one event's JSON) up to this size; aiohttp's default limit is 128 KiB.
READ_BUFFER = 1 << 20


class SharedSession:
    """The one aiohttp session every provider of an app uses: opened and closed by its lifespan.

    aiohttp rather than httpx: measured on the gateway benchmark, httpx's connection pool cost
    more CPU per request than the rest of the gateway together (docs/benchmarks.md).
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=1000, limit_per_host=0, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector, read_bufsize=READ_BUFFER, trust_env=False
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the HTTP session is not open: run the app's lifespan")
        return self._session


def timeouts(config: ModelConfig) -> tuple[aiohttp.ClientTimeout, aiohttp.ClientTimeout]:
    """(whole answer, stream): a stream may run long, but not stall between chunks."""
    connect = min(config.timeout, 10.0)
    return (
        aiohttp.ClientTimeout(total=config.timeout, connect=connect),
        aiohttp.ClientTimeout(total=None, connect=connect, sock_read=config.timeout),
    )


class Provider(Protocol):
    name: str
    config: ModelConfig

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """One non-streaming chat completion in the OpenAI response shape."""
        ...

    def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        """OpenAI `chat.completion.chunk` dicts, one per upstream event."""
        ...

    async def warm(self) -> None:
        """Be ready to answer at once (a local model loads, in a worker thread); a remote one
        has nothing to do."""
        ...

    async def aclose(self) -> None:
        """Free what this provider holds of its own (a local model's thread and weights); the
        shared HTTP session is its owner's to close."""
        ...


@runtime_checkable
class ResponsesUpstream(Protocol):
    """A provider whose upstream speaks the Responses API itself (OpenAI, Azure OpenAI): a
    Responses body goes as it is, and its Response, or its stream events, come back as sent."""

    async def respond(self, body: dict[str, Any]) -> dict[str, Any]:
        """One non-streaming Response object."""
        ...

    def respond_stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        """The Response stream's events, one dict each, up to its last (response.completed
        or .incomplete); an `error` event or response.failed raises UpstreamError."""
        ...


class Remote:
    """What every HTTP provider shares: nothing to warm, nothing of its own to close."""

    async def warm(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


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


def error_from_response(
    status: int,
    content: bytes,
    headers: CIMultiDictProxy[str] | None = None,
    *,
    sent: Mapping[str, str] | None = None,
) -> UpstreamError:
    """An UpstreamError from an upstream's error reply (OpenAI or Anthropic shaped, or not),
    or from an error event in its stream; `sent`: the request's headers, whose keys are
    redacted from it (see `redact`)."""
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
    return redacted(err, sent) if sent is not None else err


def _retry_after(headers: CIMultiDictProxy[str] | None) -> float | None:
    if headers is None:
        return None
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


def transport_error(err: BaseException, model_name: str) -> UpstreamError:
    """Connection refused, reset, timed out: no HTTP answer at all."""
    if isinstance(err, TimeoutError):
        return UpstreamError(
            f"upstream model '{model_name}' timed out",
            status=504,
            code="upstream_timeout",
            retryable=True,
        )
    # The client and the store get the kind of failure, not the upstream's address: a host and
    # port inside the operator's network are no business of a caller's. The log has them.
    log.warning("upstream model %r unreachable: %s: %s", model_name, type(err).__name__, err)
    errno = getattr(getattr(err, "os_error", None), "errno", None)
    reason = os.strerror(errno) if errno else type(err).__name__
    return UpstreamError(
        f"upstream model '{model_name}' unreachable: {reason}",
        status=502,
        code="upstream_unreachable",
        retryable=True,
    )


async def post(
    session: aiohttp.ClientSession,
    url: str,
    payload: bytes,
    headers: dict[str, str],
    timeout: aiohttp.ClientTimeout,
    *,
    model_name: str,
) -> aiohttp.ClientResponse:
    """One attempt: the response, or an UpstreamError for a transport failure or a 4xx/5xx."""
    try:
        response = await session.post(url, data=payload, headers=headers, timeout=timeout)
    except (aiohttp.ClientError, TimeoutError) as err:
        raise transport_error(err, model_name) from err
    if response.status >= 400:
        try:
            content = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            content = b""
        finally:
            response.release()
        failure = error_from_response(response.status, content, response.headers, sent=headers)
        if response.status == 401:
            raise upstream_auth_failed(failure, model_name)
        raise failure
    return response


def upstream_auth_failed(failure: UpstreamError, model_name: str) -> UpstreamError:
    """An upstream's 401 is about the gateway's own upstream key, not the caller's: passed on as
    a 401 it told the caller that *their* gateway key was wrong (the SDK raises
    AuthenticationError). It is a 502 that names the model whose key to mend."""
    return UpstreamError(
        f"upstream model '{model_name}' refused the gateway's credentials for it "
        f"({failure.message}); check models.{model_name}.api_key",
        status=502,
        code="upstream_auth_failed",
    )


SECRET_HEADERS = ("authorization", "api-key", "x-api-key")


def redacted(err: UpstreamError, headers: Mapping[str, str]) -> UpstreamError:
    """`err` with the request's keys taken out of every text it carries (its message, and the
    param and code an upstream chose): on an error reply and on a mid-stream error event alike."""
    err.message = redact(err.message, headers)
    err.args = (err.message,)
    if err.param is not None:
        err.param = redact(str(err.param), headers)
    if err.code is not None:
        err.code = redact(str(err.code), headers)
    return err


def redact(text: str, headers: Mapping[str, str]) -> str:
    """`text` without the request's keys: an upstream may quote the key it was sent in its
    error, and that message reaches the client, the store and the logs."""
    for name, value in headers.items():
        if name.lower() not in SECRET_HEADERS:
            continue
        # the whole value first ("Bearer sk-..."), then the bare key: the same text every time
        for secret in sorted({value, value.partition(" ")[2]}, key=len, reverse=True):
            if len(secret) >= 8 and secret in text:
                text = text.replace(secret, "***")
    return text


def bad_reply(model_name: str, what: str) -> UpstreamError:
    return UpstreamError(f"upstream model '{model_name}' {what}", code="bad_upstream_response")


async def read_json(response: aiohttp.ClientResponse, model_name: str) -> Any:
    """The whole body of a non-streaming answer, parsed."""
    try:
        content = await response.read()
    except (aiohttp.ClientError, TimeoutError) as err:
        raise transport_error(err, model_name) from err
    finally:
        response.release()
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        raise bad_reply(model_name, "answered with something not JSON") from None


async def sse_data(response: aiohttp.ClientResponse, model_name: str) -> AsyncGenerator[Any, None]:
    """The JSON of each `data:` line of an SSE response (`[DONE]` comes as None); releases it."""
    # Whole buffers, split here: aiohttp's line-by-line reader cost a sixth of a streamed
    # request's CPU in the gateway benchmark.
    rest = b""
    try:
        async for block in response.content.iter_any():
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            if len(rest) > READ_BUFFER:
                raise ValueError("stream event too long")
            for line in lines:
                if line.startswith(b"data:"):
                    data = line[5:].strip()
                    yield None if data == b"[DONE]" else orjson.loads(data)
        if rest.startswith(b"data:"):
            data = rest[5:].strip()
            yield None if data == b"[DONE]" else orjson.loads(data)
    except TimeoutError as err:
        raise UpstreamError(
            f"upstream model '{model_name}' stalled mid-stream",
            code="upstream_timeout",
            status=504,
        ) from err
    except aiohttp.ClientError as err:
        raise UpstreamError(
            f"upstream model '{model_name}' broke off the stream: {type(err).__name__}",
            code="upstream_stream_cut",
        ) from err
    except (orjson.JSONDecodeError, ValueError):
        raise bad_reply(model_name, "sent a malformed stream event") from None
    finally:
        response.release()


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

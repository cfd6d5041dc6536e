"""OpenAI and every server speaking its chat-completions wire format (vLLM, Ollama, llama.cpp);
OpenAI itself also answers the Responses API natively (`OpenAI.respond`), which a compatible
server may not serve."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from ..config import ModelConfig
from ..errors import UpstreamError
from .base import (
    Chunk,
    Remote,
    SharedSession,
    bad_reply,
    error_from_response,
    post,
    read_json,
    secret_header,
    sse_data,
    timeouts,
    with_retries,
)

OPENAI_BASE_URL = "https://api.openai.com/v1"


class OpenAICompatible(Remote):
    """POST {base_url}/chat/completions with a Bearer key."""

    name = "openai-compatible"

    def __init__(self, model_name: str, config: ModelConfig, client: SharedSession) -> None:
        self.model_name = model_name
        self.config = config
        self.client = client
        self.name = config.provider
        self.timeout, self.stream_timeout = timeouts(config)

    @property
    def url(self) -> str:
        base = self.config.base_url or OPENAI_BASE_URL
        return base.rstrip("/") + "/chat/completions"

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", **self.config.headers}
        key = secret_header(self.config, self.model_name)
        if key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    async def _send(
        self, body: dict[str, Any], stream: bool, url: str | None = None
    ) -> aiohttp.ClientResponse:
        timeout = self.stream_timeout if stream else self.timeout
        return await post(
            self.client.session,
            url or self.url,
            orjson.dumps(body),
            self.headers(),
            timeout,
            model_name=self.model_name,
        )

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        async def attempt() -> dict[str, Any]:
            data = await read_json(await self._send(body, stream=False), self.model_name)
            if not isinstance(data, dict) or "choices" not in data:
                raise bad_reply(self.model_name, "answered without choices")
            return data

        return await with_retries(attempt, self.config.max_retries)

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        response = await with_retries(
            lambda: self._send(body, stream=True), self.config.max_retries
        )
        sent = self.headers()
        done = finished = False
        async with contextlib.aclosing(sse_data(response, self.model_name)) as chunks:
            async for chunk in chunks:
                if chunk is None:  # [DONE]
                    done = True
                    break
                if "error" in chunk and "choices" not in chunk:
                    # may quote the key it was sent, like an error reply
                    raise error_from_response(502, orjson.dumps(chunk), sent=sent)
                choices = chunk.get("choices") or ()
                finished = finished or any(c.get("finish_reason") for c in choices)
                yield chunk
        if not (done or finished):
            raise UpstreamError(
                f"upstream model '{self.model_name}' ended the stream before it finished",
                code="upstream_stream_cut",
            )


TERMINAL = ("response.completed", "response.incomplete")


class OpenAI(OpenAICompatible):
    """OpenAI: chat completions as every compatible server, and POST {base_url}/responses."""

    @property
    def responses_url(self) -> str:
        base = self.config.base_url or OPENAI_BASE_URL
        return base.rstrip("/") + "/responses"

    def responses_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The Responses body as this upstream takes it (Azure names its deployment)."""
        return body

    async def _send_response(self, body: dict[str, Any], stream: bool) -> aiohttp.ClientResponse:
        return await self._send(self.responses_body(body), stream, self.responses_url)

    async def respond(self, body: dict[str, Any]) -> dict[str, Any]:
        async def attempt() -> dict[str, Any]:
            data = await read_json(await self._send_response(body, False), self.model_name)
            if not isinstance(data, dict) or not isinstance(data.get("output"), list):
                raise bad_reply(self.model_name, "answered without a Response's output")
            return data

        return await with_retries(attempt, self.config.max_retries)

    async def respond_stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        response = await with_retries(
            lambda: self._send_response(body, True), self.config.max_retries
        )
        sent = self.headers()
        done = False
        async with contextlib.aclosing(sse_data(response, self.model_name)) as events:
            async for event in events:
                if event is None:  # a [DONE] some servers add
                    break
                kind = event.get("type") if isinstance(event, dict) else None
                if not isinstance(kind, str):
                    raise bad_reply(self.model_name, "sent a stream event without a type")
                if kind == "error":
                    # may quote the key it was sent, like an error reply
                    raise error_from_response(502, orjson.dumps({"error": event}), sent=sent)
                if kind == "response.failed":
                    error = (event.get("response") or {}).get("error") or {}
                    raise error_from_response(502, orjson.dumps({"error": error}), sent=sent)
                yield event
                if kind in TERMINAL:
                    done = True
                    break
        if not done:
            raise UpstreamError(
                f"upstream model '{self.model_name}' ended the stream before it finished",
                code="upstream_stream_cut",
            )

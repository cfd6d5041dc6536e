"""OpenAI and every server speaking its chat-completions wire format (vLLM, Ollama, llama.cpp)."""

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

    async def _send(self, body: dict[str, Any], stream: bool) -> aiohttp.ClientResponse:
        timeout = self.stream_timeout if stream else self.timeout
        return await post(
            self.client.session,
            self.url,
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

"""OpenAI and every server speaking its chat-completions wire format (vLLM, Ollama, llama.cpp)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from ..config import ModelConfig
from ..errors import UpstreamError
from .base import Chunk, error_from_response, secret_header, transport_error, with_retries

OPENAI_BASE_URL = "https://api.openai.com/v1"


class OpenAICompatible:
    """POST {base_url}/chat/completions with a Bearer key."""

    name = "openai-compatible"

    def __init__(self, model_name: str, config: ModelConfig, client: httpx.AsyncClient) -> None:
        self.model_name = model_name
        self.config = config
        self.client = client
        self.name = config.provider
        self.timeout = httpx.Timeout(config.timeout, connect=min(config.timeout, 10.0))

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

    async def _send(self, body: dict[str, Any], stream: bool) -> httpx.Response:
        request = self.client.build_request(
            "POST",
            self.url,
            content=orjson.dumps(body),
            headers=self.headers(),
            timeout=self.timeout,
        )
        try:
            response = await self.client.send(request, stream=stream)
        except httpx.HTTPError as err:
            raise transport_error(err, self.model_name) from err
        if response.status_code >= 400:
            content = await response.aread()
            await response.aclose()
            raise error_from_response(response.status_code, content, response.headers)
        return response

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        async def attempt() -> dict[str, Any]:
            response = await self._send(body, stream=False)
            try:
                data = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                raise UpstreamError(
                    f"upstream model '{self.model_name}' answered with something not JSON",
                    code="bad_upstream_response",
                ) from None
            if not isinstance(data, dict) or "choices" not in data:
                raise UpstreamError(
                    f"upstream model '{self.model_name}' answered without choices",
                    code="bad_upstream_response",
                )
            return data

        return await with_retries(attempt, self.config.max_retries)

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        response = await with_retries(
            lambda: self._send(body, stream=True), self.config.max_retries
        )
        done = finished = False
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                chunk = orjson.loads(data)
                if "error" in chunk and "choices" not in chunk:
                    raise error_from_response(502, data.encode(), httpx.Headers())
                finished = finished or any(
                    c.get("finish_reason") for c in chunk.get("choices") or ()
                )
                yield chunk
        except httpx.HTTPError as err:
            raise UpstreamError(
                f"upstream model '{self.model_name}' broke off the stream: {type(err).__name__}",
                code="upstream_stream_cut",
            ) from err
        except orjson.JSONDecodeError:
            raise UpstreamError(
                f"upstream model '{self.model_name}' sent a malformed stream event",
                code="bad_upstream_response",
            ) from None
        finally:
            await response.aclose()
        if not (done or finished):
            raise UpstreamError(
                f"upstream model '{self.model_name}' ended the stream before it finished",
                code="upstream_stream_cut",
            )

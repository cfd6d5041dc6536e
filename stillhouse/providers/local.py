"""Provider `local`: a model run in this process by an engine: torch (transformers, CPU or GPU)
or llama.cpp (`engine = "llama-cpp"`, GGUF models).

The model loads on the first request, in a worker thread; generation runs on the engine's own
thread, so the gateway's event loop never waits on the model. Failures surface as UpstreamError,
like any other upstream's, so the gateway captures them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError

from ..config import ModelConfig
from ..errors import HTTPError, UpstreamError
from .base import Chunk, SharedSession


def _upstream_error(err: Exception, model_name: str) -> UpstreamError:
    if isinstance(err, UpstreamError):
        return err
    if isinstance(err, HTTPError):
        return UpstreamError(
            err.message, status=err.status, type=err.type, code=err.code, param=err.param
        )
    return UpstreamError(
        f"local model '{model_name}' failed: {type(err).__name__}: {err}",
        status=500,
        code="local_model_error",
    )


class Local:
    """The model named by `config.model` (a packaged name, a directory, a .gguf or a hub id)."""

    name = "local"

    def __init__(self, model_name: str, config: ModelConfig, client: SharedSession) -> None:
        from ..engine.completions import LocalCompletions

        self.model_name = model_name
        self.config = config
        self.completions = LocalCompletions(self._load, config.model)

    def _load(self) -> Any:
        if self.config.engine == "llama-cpp":
            from ..engine.llamacpp import LlamaCppEngine

            return LlamaCppEngine.load(
                self.config.model, adapter=self.config.adapter, name=self.config.model
            )
        from ..engine.runtime import Engine

        return Engine.load(
            self.config.model,
            adapter=self.config.adapter,
            dtype=self.config.dtype,
            name=self.config.model,
            max_batch=self.config.max_batch,
        )

    def _request(self, body: dict[str, Any]) -> Any:
        from ..openai.protocol import ChatCompletionRequest

        try:
            return ChatCompletionRequest.model_validate(body)
        except ValidationError as err:
            raise UpstreamError(str(err), status=400, code="invalid_value") from None

    async def warm(self) -> None:
        await self.completions.engine()  # loads in a worker thread, off the event loop

    async def aclose(self) -> None:
        await asyncio.to_thread(self.completions.close)

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self.completions.complete(self._request(body))
        except Exception as err:
            raise _upstream_error(err, self.model_name) from err

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        chunks = self.completions.stream(self._request(body))
        try:
            async for chunk in chunks:
                yield chunk
        except Exception as err:
            raise _upstream_error(err, self.model_name) from err
        finally:
            await chunks.aclose()

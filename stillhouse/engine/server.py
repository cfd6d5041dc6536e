"""`stillhouse serve-model`: one local model behind a small OpenAI-compatible HTTP server, a
stand-in for vLLM (`/v1/chat/completions` with SSE, `/v1/models`, `/healthz` with batch stats).

Requests are checked with the OpenAI protocol models (stillhouse.openai) and errors take the
OpenAI shape. The event loop never runs the model: generation happens on the engine's worker
thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..errors import HTTPError, NotFound
from ..openai.http import DONE, json_response, openai_app, read_body, sse
from ..openai.protocol import parse_request
from .completions import LocalCompletions
from .sequence import Runtime

MAX_BODY_BYTES = 4 * 1024 * 1024


def create_model_app(
    engine: Runtime, model_name: str | None = None, *, owns_engine: bool = False
) -> Starlette:
    """The server for one loaded engine; it answers to `model_name` (default: engine.name)."""
    name = model_name or engine.name
    completions = LocalCompletions.of(engine, name)

    async def chat_completions(request: Request) -> Response:
        _, checked = parse_request(await read_body(request, MAX_BODY_BYTES))
        if checked.model != name:
            raise NotFound(
                f"the model '{checked.model}' does not exist (this server has '{name}')",
                param="model",
                code="model_not_found",
            )
        if not checked.stream:
            return json_response(await completions.complete(checked))
        chunks = completions.stream(checked)
        first = await anext(chunks)  # errors before the first chunk get a proper status

        async def events() -> AsyncIterator[bytes]:
            try:
                yield sse(first)
                async for chunk in chunks:
                    yield sse(chunk)
                yield DONE
            except HTTPError as err:
                yield sse(err.to_body())
            finally:
                await chunks.aclose()  # cancels the request in the engine if the client left

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "stillhouse"}]
        return json_response({"object": "list", "data": data})

    async def healthz(request: Request) -> Response:
        stats = engine.stats.as_dict()
        stats["prefix_tokens_reused"] = engine.prefix_tokens_reused
        return json_response({"status": "ok", "model": name, "engine": stats})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owns_engine:
                engine.close()

    app = openai_app(
        [
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        server="model server",
        lifespan=lifespan,
    )
    app.state.engine = engine
    return app

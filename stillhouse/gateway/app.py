"""The gateway's ASGI app: OpenAI-compatible routes, health, metrics. Built per call of create_app.

It must never block on the database: captures go through the CaptureWriter's queue, and nothing
on a request's path reads the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..config import Config
from ..dashboard import dashboard_routes
from ..engine.sources import home
from ..errors import ConfigError, Unauthorized
from ..openai.http import json_response, openai_app
from ..providers import Provider, SharedSession, build_provider
from ..routing import RoutingTable
from ..store import CaptureWriter, open_store
from .chat import ChatCompletions
from .fine_tuning import FineTuningAPI
from .metrics import CONTENT_TYPE, GatewayMetrics
from .openapi import openapi_spec
from .responses import ResponseLog, Responses
from .security import SecurityMiddleware, allowed_hosts, require_json
from .telemetry import Tracer


def default_writer(config: Config) -> CaptureWriter:
    assert config.store.journal_dir is not None  # set by parse_config
    return CaptureWriter(
        lambda: open_store(config.store.url),
        config.store.journal_dir,
        queue_size=config.store.queue_size,
        batch_size=config.store.batch_size,
    )


def key_digest(key: str) -> bytes:
    """Keys are compared as SHA-256 digests with hmac.compare_digest: in constant time, and
    without leaking a key's length; the app holds only the digests."""
    return hashlib.sha256(key.encode()).digest()


def _gateway_keys(config: Config) -> list[bytes]:
    keys = []
    for i, secret in enumerate(config.gateway.api_keys):
        try:
            keys.append(key_digest(secret.reveal()))
        except ConfigError as err:
            raise ConfigError(f"gateway.api_keys[{i}]: {err}") from None
    return keys


def create_app(
    config: Config, *, writer: CaptureWriter | None = None, routing: RoutingTable | None = None
) -> Starlette:
    """The gateway for `config`. It starts and stops `writer` (default: one on config.store).
    Without a `routing` table it keeps its own, reloaded from the stored lifecycle state every
    `lifecycle.refresh` seconds in the background."""
    from ..lifecycle.table import RoutingRefresher

    writer = writer or default_writer(config)
    refresher = None
    if routing is None:
        routing = RoutingTable()
        refresher = RoutingRefresher(config.store.url, routing, config.lifecycle.refresh)
    keys = _gateway_keys(config)
    metrics = GatewayMetrics(writer)
    client = SharedSession()
    providers: dict[str, Provider] = {
        name: build_provider(name, model, client) for name, model in config.models.items()
    }
    # opentelemetry is imported only here, when configured (a ConfigError if not installed)
    tracer = Tracer(config.telemetry) if config.telemetry.otlp_endpoint else None
    chat = ChatCompletions(
        config, providers, writer, metrics, routing, session=client, tracer=tracer
    )
    responses = Responses(chat, ResponseLog(config.store.url, writer))

    def authorise(request: Request) -> None:
        if not keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = key_digest(token.strip())
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(given, k) for k in keys):
            raise Unauthorized(
                "missing or wrong API key (Authorization: Bearer ...)", code="invalid_api_key"
            )

    # the fine-tuning API: jobs train in its runner's thread; their models answer through `chat`
    fine_tuning = FineTuningAPI(
        config, authorise, chat.deployments.fine_tuned, home() / "fine_tuning"
    )

    async def chat_completions(request: Request) -> Response:
        authorise(request)
        require_json(request)
        return await chat(request)

    async def create_response(request: Request) -> Response:
        authorise(request)
        require_json(request)
        return await responses.create(request)

    async def retrieve_response(request: Request) -> Response:
        authorise(request)
        return await responses.retrieve(request)

    async def models(request: Request) -> Response:
        authorise(request)
        names = [*sorted(config.tasks), *sorted(chat.deployments.fine_tuned.known)]
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "stillhouse"}
            for name in names
        ]
        return json_response({"object": "list", "data": data})

    async def healthz(request: Request) -> Response:
        return json_response(
            {
                "status": "ok",
                "capture_queue": writer.queued,
                "captures_at_risk": writer.at_risk,
                "dropped": writer.dropped,
            }
        )

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    description = orjson.dumps(openapi_spec(config))

    async def openapi(request: Request) -> Response:
        authorise(request)  # it names every task, which /v1/models keeps behind the key
        return Response(description, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        writer.start()
        await client.open()
        if refresher is not None:
            refresher.start()
        fine_tuning.start()
        try:
            yield
        finally:
            if refresher is not None:
                refresher.stop()
            await asyncio.to_thread(fine_tuning.stop)  # a run in progress waits to resume
            await chat.deployments.fine_tuned.aclose()
            await client.close()
            writer.close()
            if tracer is not None:
                await asyncio.to_thread(tracer.close)  # exports what is queued

    app = openai_app(
        [
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/responses", create_response, methods=["POST"]),
            Route("/v1/responses/{response_id}", retrieve_response, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            *fine_tuning.routes(),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            *dashboard_routes(config, keys),  # read-only pages at /
        ],
        server="gateway",
        middleware=[Middleware(SecurityMiddleware, allowed=allowed_hosts(config))],
        lifespan=lifespan,
    )
    app.state.writer = writer
    app.state.metrics = metrics
    app.state.routing = routing
    return app

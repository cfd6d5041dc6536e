"""The OpenAI wire over HTTP, for every server Stillhouse runs (the gateway, `serve-model`): server-
sent events, bodies read within a size and a time limit, errors in the OpenAI shape, and
`openai_app`, the Starlette app both build on.

An error never leaves as a traceback: ours with their status, unknown routes as 404, anything
else as a logged 500 in the OpenAI shape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ..errors import HTTPError, NotFound, PayloadTooLarge, RequestTimeout

log = logging.getLogger("stillhouse.openai")

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_response(err: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(err.to_body()), err.status, headers, "application/json")


def openai_exception_handlers(server: str) -> dict[Any, Any]:
    """Starlette exception handlers that answer every error in the OpenAI shape, never a
    traceback: ours with their status, unknown routes as 404, anything else as a logged 500."""

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPError)
        return error_response(exc)

    async def on_starlette_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error_response(NotFound(f"no route {request.url.path}", code="unknown_url"))
        err = HTTPError(str(exc.detail), status=exc.status_code, type="invalid_request_error")
        return error_response(err, dict(exc.headers or {}))  # a 405 keeps its Allow header

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(HTTPError(f"internal error in the Stillhouse {server}"))

    return {
        HTTPError: on_http_error,
        StarletteHTTPException: on_starlette_error,
        Exception: on_crash,
    }


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """The whole body, up to `limit` bytes and within `timeout` seconds: a client that stalls
    mid-body would otherwise hold its connection (and a slot of the server's) for ever."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is over the {limit}-byte limit", code="body_too_large")
    parts, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for part in request.stream():
                size += len(part)
                if size > limit:
                    raise PayloadTooLarge(
                        f"request body is over the {limit}-byte limit", code="body_too_large"
                    )
                parts.append(part)
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {timeout:g} s", code="body_timeout"
        ) from None
    return b"".join(parts)


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(payload), status, headers, media_type="application/json")


def openai_app(
    routes: Sequence[BaseRoute],
    *,
    server: str,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    middleware: Sequence[Middleware] = (),
) -> Starlette:
    """A Starlette app whose every error answers in the OpenAI shape; `server` names it in a
    500's message ("gateway", "model server")."""
    return Starlette(
        routes=list(routes),
        exception_handlers=openai_exception_handlers(server),
        middleware=list(middleware),
        lifespan=lifespan,
    )

"""Streamed answers: relayed chunk by chunk as they come, or, when a student answer may fall back
on its confidence, held whole until that is known (then sent, or replaced by the teacher's stream).

A stream's call is captured before its last event goes out, so a client that has the whole answer
can count on it being journaled; a client that leaves mid-stream is captured as a 499.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import Histogram
from starlette.responses import Response, StreamingResponse

from ..answers import confidence_of
from ..config import Config
from ..errors import UpstreamError
from ..openai.http import error_response
from ..openai.stream import StreamAccumulator
from ..providers import Chunk, Provider
from ..routing import needs_fallback
from .capture import Capture
from .overhead import stamp, stamped
from .plan import Exchange, Planner
from .shape import Shape


class Replay:
    """A provider that streams chunks already received (a held student stream)."""

    def __init__(self, chunks: list[Chunk], provider: Provider) -> None:
        self.chunks = chunks
        self.name = provider.name
        self.config = provider.config

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        for chunk in self.chunks:
            yield chunk

    async def warm(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class Streams:
    def __init__(self, config: Config, planner: Planner, capture: Capture) -> None:
        self.config = config
        self.planner = planner
        self.capture = capture

    def _overhead(self, x: Exchange) -> Histogram:
        return self.capture.metrics.overhead.labels(x.call.task)

    def _options(self, x: Exchange) -> None:
        # usage is always asked for (the capture needs it); the client gets it only if it asked
        x.forward["stream_options"] = {**(x.checked.stream_options or {}), "include_usage": True}

    async def held(self, x: Exchange, shape: Shape) -> Response:
        """A student stream held whole until its confidence is known: then its events are
        sent, or, under the threshold, the teacher's stream is (route fallback), stamped with
        the time since the user asked. See docs/lifecycle.md for the time to first token."""
        self._options(x)
        acc = StreamAccumulator(x.started)
        chunks_held: list[Chunk] = []
        chunks = x.provider.stream(x.forward)
        try:
            with x.clock.timing():
                async for chunk in chunks:
                    acc.add(chunk)
                    chunks_held.append(chunk)
        except UpstreamError as err:
            self.capture.error(x.call, err, x.started)  # nothing was sent: a proper HTTP error
            return stamped(error_response(err, x.headers), x.started, x.clock, self._overhead(x))
        except asyncio.CancelledError:
            self.capture.stream(
                x.call, acc, x.started, "client disconnected before the answer", 499
            )
            raise
        finally:
            with contextlib.suppress(Exception):
                await chunks.aclose()  # type: ignore[attr-defined]
        task = self.config.tasks[x.call.task]
        confidence = confidence_of(acc.response())
        if not needs_fallback(task, x.entry, x.route, confidence, x.intent):
            return await self.relay(x.replace(provider=Replay(chunks_held, x.provider)), shape)
        replaced = dataclasses.replace(x.call, route_reason="fallback:replaced")
        self.capture.stream(replaced, acc, x.started, None, 200)
        teacher = self.planner.teacher(x, "fallback", "fallback_of")
        teacher.headers.pop("x-stillhouse-candidate", None)
        teacher.forward["stream"] = True
        return await self.relay(
            teacher.replace(call=dataclasses.replace(teacher.call, stream=True)), shape
        )

    async def relay(self, x: Exchange, shape: Shape) -> Response:
        """Each chunk to the client as it comes, as `shape` shows it."""
        wants_usage = bool((x.checked.stream_options or {}).get("include_usage"))
        self._options(x)
        chunks = x.provider.stream(x.forward)
        acc = StreamAccumulator(x.started)
        first: Chunk | None = None
        try:
            with x.clock.timing():
                first = await anext(chunks)
        except StopAsyncIteration:
            pass
        except UpstreamError as err:
            # Nothing sent yet: the client gets a proper HTTP error status.
            self.capture.error(x.call, err, x.started)
            return stamped(error_response(err, x.headers), x.started, x.clock, self._overhead(x))

        async def events() -> AsyncIterator[bytes]:
            capture = self.capture.stream_once(x.call, acc, x.started)

            try:
                if opening := shape.opening(x):
                    yield opening
                pending = [first] if first is not None else []
                while True:
                    if pending:
                        chunk = pending.pop()
                    else:
                        try:
                            chunk = await anext(chunks)
                        except StopAsyncIteration:
                            break
                    acc.add(chunk)
                    if shown := shape.chunk(x, chunk, wants_usage):
                        yield shown
                capture()
                yield shape.closing(x, acc)
            except UpstreamError as err:
                self.capture.metrics.upstream_errors.labels(x.call.model).inc()
                capture(err.message, err.status)
                yield shape.failed(x, err)
            except (asyncio.CancelledError, GeneratorExit):
                capture("client disconnected before the stream ended", 499)
                raise
            finally:
                capture("the stream ended unexpectedly", 500)  # no-op when captured above
                # Cancelled mid-close (client gone): nothing is left to free.
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await chunks.aclose()  # type: ignore[attr-defined]

        headers = stamp(x.headers, x.started, x.clock, self._overhead(x))
        return StreamingResponse(events(), 200, headers, media_type="text/event-stream")

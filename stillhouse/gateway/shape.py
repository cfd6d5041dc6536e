"""How an answer is shown to the client: as chat completions (`ChatShape`, the default) or as
the Responses API's objects and events (responses.py). The route, the call, the fallback and the
capture are the same whichever shape: only what goes on the wire differs.

A shape sees every answer the client gets, whole or streamed, after its call is captured.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..errors import UpstreamError
from ..openai.http import DONE, sse
from ..openai.stream import StreamAccumulator
from .plan import Exchange, shown


class Shape(Protocol):
    def whole(self, x: Exchange, completion: dict[str, Any]) -> dict[str, Any]:
        """The body of a non-streamed answer."""
        ...

    def opening(self, x: Exchange) -> bytes:
        """What a stream starts with, before its first chunk."""
        ...

    def chunk(self, x: Exchange, chunk: dict[str, Any], wants_usage: bool) -> bytes:
        """One upstream chunk as the client gets it (b"" for nothing)."""
        ...

    def closing(self, x: Exchange, acc: StreamAccumulator) -> bytes:
        """What a whole stream ends with."""
        ...

    def failed(self, x: Exchange, err: UpstreamError) -> bytes:
        """An upstream error after the stream began."""
        ...


class ChatShape:
    """Chat completions as the upstream sent them (logprobs the gateway asked for taken out)."""

    def whole(self, x: Exchange, completion: dict[str, Any]) -> dict[str, Any]:
        return shown(x, completion)

    def opening(self, x: Exchange) -> bytes:
        return b""

    def chunk(self, x: Exchange, chunk: dict[str, Any], wants_usage: bool) -> bytes:
        return sse(shown(x, chunk)) if wants_usage or chunk.get("choices") else b""

    def closing(self, x: Exchange, acc: StreamAccumulator) -> bytes:
        return DONE

    def failed(self, x: Exchange, err: UpstreamError) -> bytes:
        return sse(err.to_body())


CHAT = ChatShape()

"""The open-loop load generator: each request fired at its scheduled time whether or not earlier
ones have answered (no coordinated omission), on uvloop with raw protocols and the httptools
parser, so that it costs tens of microseconds of CPU a request. It must never use an HTTP client
library or wait for a response before firing the next request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from typing import Any

import httptools

PROMPT = (
    "Summarise the following customer message in one sentence and say whether it needs a "
    "refund: my order arrived two days late and the box was damaged, but everything inside "
    "works fine, so I only want to let you know."
)


def request_body(stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": "bench",
        "messages": [
            {"role": "system", "content": "You are a concise support assistant."},
            {"role": "user", "content": PROMPT},
        ],
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def http_request(port: int, body: bytes) -> bytes:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer sk-bench\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Rec:
    __slots__ = ("done", "error", "first_body", "intended", "retried", "status", "t0", "tail")

    def __init__(self, intended: float) -> None:
        self.intended = intended
        self.t0 = 0.0  # when it was fired
        self.first_body: float | None = None
        self.done: float | None = None
        self.status = 0
        self.tail = b""
        self.error: str | None = None
        self.retried = False


class _Conn(asyncio.Protocol):
    def __init__(self, gen: LoadGen) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.rec: Rec | None = None
        self.got_bytes = False
        self.now = 0.0
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.now = time.perf_counter()
        if self.rec is None:
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            rec, self.rec = self.rec, None
            rec.error = f"parse: {err}"
            self.gen.failed(rec)
            if self.transport:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gen.lost(self)

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        rec = self.rec
        if rec is not None:
            if rec.first_body is None and body:
                rec.first_body = self.now
            rec.tail = (rec.tail + body)[-16:]

    def on_message_complete(self) -> None:
        rec, self.rec = self.rec, None
        if rec is None:
            return
        rec.done = self.now
        rec.status = self.parser.get_status_code()
        self.gen.finished(rec, self)

    def send(self, rec: Rec, payload: bytes) -> None:
        self.rec = rec
        self.got_bytes = False
        self.gen.written += 1
        self.transport.write(payload)  # type: ignore[union-attr]


class LoadGen:
    def __init__(self, port: int, payload: bytes, max_conns: int = 128) -> None:
        self.port = port
        self.payload = payload
        self.max_conns = max_conns
        self.idle: list[_Conn] = []  # LIFO: hot connections stay hot
        self.conns: set[_Conn] = set()
        self.connecting = 0
        self.waiting: collections.deque[Rec] = collections.deque()
        self.outstanding = 0
        self.results: list[Rec] = []
        self.retries = 0
        self.written = 0  # requests written to a socket (retries included)
        self.closing = False  # set when the run is over: lost connections are not retried
        self.queued_max = 0
        self.conns_max = 0
        self._drained: asyncio.Event | None = None

    async def _open(self) -> _Conn:
        loop = asyncio.get_running_loop()
        self.connecting += 1
        try:
            _, proto = await loop.create_connection(lambda: _Conn(self), "127.0.0.1", self.port)
        finally:
            self.connecting -= 1
        assert isinstance(proto, _Conn)
        self.conns.add(proto)
        self.conns_max = max(self.conns_max, len(self.conns))
        return proto

    async def prewarm(self, n: int) -> None:
        for c in await asyncio.gather(*(self._open() for _ in range(n))):
            self.idle.append(c)

    def fire(self, rec: Rec) -> None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                conn.send(rec, self.payload)
                return
        if len(self.conns) + self.connecting < self.max_conns:
            asyncio.get_running_loop().create_task(self._connect_and_send(rec))
        else:
            self.waiting.append(rec)
            self.queued_max = max(self.queued_max, len(self.waiting))

    async def _connect_and_send(self, rec: Rec) -> None:
        try:
            conn = await self._open()
        except OSError as err:
            rec.error = f"connect: {err}"
            self.failed(rec)
            return
        conn.send(rec, self.payload)

    def _release(self, conn: _Conn) -> None:
        if self.waiting and not conn.closed:
            conn.send(self.waiting.popleft(), self.payload)
        elif not conn.closed:
            self.idle.append(conn)

    def _settle(self, rec: Rec) -> None:
        self.results.append(rec)
        self.outstanding -= 1
        if self._drained is not None and self.outstanding == 0:
            self._drained.set()

    def finished(self, rec: Rec, conn: _Conn) -> None:
        self._settle(rec)
        self._release(conn)

    def failed(self, rec: Rec) -> None:
        rec.done = time.perf_counter()
        self._settle(rec)

    def lost(self, conn: _Conn) -> None:
        self.conns.discard(conn)
        rec, conn.rec = conn.rec, None
        if rec is None:
            return
        if not conn.got_bytes and not rec.retried and not self.closing:
            # The server closed an idle keep-alive connection as we wrote to it: it never saw
            # the request, so send it again (the time already spent still counts).
            rec.retried = True
            self.retries += 1
            self.fire(rec)
            return
        rec.error = "cut off at the end of the run" if self.closing else "connection lost"
        self.failed(rec)

    async def run(self, rate: float, seconds: float, drain_s: float) -> tuple[float, float, int]:
        """Fire rate*seconds requests at fixed intervals; returns (start, end, unfinished)."""
        total = int(rate * seconds)
        interval = 1.0 / rate
        self._drained = asyncio.Event()
        start = time.perf_counter() + 0.01
        i = 0
        while i < total:
            now = time.perf_counter()
            due = start + i * interval
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while i < total and start + i * interval <= now:
                rec = Rec(start + i * interval)
                rec.t0 = now
                self.outstanding += 1
                self.fire(rec)
                i += 1
        end = start + total * interval
        self._drained.clear()  # it was set whenever nothing was in flight during the run
        if self.outstanding:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), drain_s)
        unfinished = self.outstanding
        self.closing = True
        for c in list(self.conns):
            if c.transport is not None:
                c.transport.close()
        await asyncio.sleep(0.05)
        return start, end, unfinished

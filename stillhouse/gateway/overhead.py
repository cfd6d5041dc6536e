"""The gateway's own time on a request: from when its handler got the request to when the
answer's headers are ready, less the time spent waiting on upstreams. A non-streamed answer
waits for its whole upstream answer (two, after a fallback); a relayed stream for its first
chunk; a held stream for the whole held student stream.

Sent as `x-stillhouse-overhead-ms` on every answer and observed in the Prometheus histogram
`stillhouse_overhead_seconds`. It is what the gateway adds before the client sees a byte; the
time spent passing later chunks through is not in it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from prometheus_client import Histogram
from starlette.responses import Response

HEADER = "x-stillhouse-overhead-ms"


class UpstreamClock:
    """Seconds one request spent waiting on upstreams (shared by its fallback's exchange)."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        """Around the awaits on an upstream (failed ones count too)."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - began


def overhead_seconds(started: float, clock: UpstreamClock) -> float:
    return max(0.0, time.perf_counter() - started - clock.seconds)


def stamp(
    headers: dict[str, str], started: float, clock: UpstreamClock, histogram: Histogram
) -> dict[str, str]:
    """`headers` with the overhead so far; the histogram observes it."""
    seconds = overhead_seconds(started, clock)
    histogram.observe(seconds)
    return {**headers, HEADER: f"{seconds * 1000:.3f}"}


def stamped(
    response: Response, started: float, clock: UpstreamClock, histogram: Histogram
) -> Response:
    """A built response with the overhead header set (its body already serialised)."""
    seconds = overhead_seconds(started, clock)
    histogram.observe(seconds)
    response.headers[HEADER] = f"{seconds * 1000:.3f}"
    return response

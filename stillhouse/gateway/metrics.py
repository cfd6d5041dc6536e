"""Prometheus metrics for one gateway app (its own registry: no process globals)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..store.writer import CaptureWriter

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _CaptureCollector(Collector):
    def __init__(self, writer: CaptureWriter) -> None:
        self.writer = writer

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        w = self.writer
        yield GaugeMetricFamily(
            "stillhouse_capture_queue_depth",
            "Captured records waiting for the writer",
            value=w.queued,
        )
        yield GaugeMetricFamily(
            "stillhouse_captures_at_risk",
            "Captured records only in memory (the journal could not take them, the store has "
            "not yet): a crash now would lose them",
            value=w.at_risk,
        )
        for name, value, doc in (
            ("written", w.written, "Captured records written to the store from the queue"),
            ("replayed", w.replayed, "Captured records written to the store from the journal"),
            ("overflowed", w.overflowed, "Captured records the queue had no room for (journaled)"),
            ("journal_errors", w.journal_errors, "Records the journal could not take: at risk"),
            ("store_errors", w.store_errors, "Failed store writes (records wait in the journal)"),
            ("dropped", w.dropped, "Captured records lost; must stay 0"),
        ):
            yield CounterMetricFamily(f"stillhouse_captures_{name}", doc, value=value)


class GatewayMetrics:
    def __init__(self, writer: CaptureWriter) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "stillhouse_requests",
            "Chat completion requests answered",
            ["task", "role", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "stillhouse_request_seconds",
            "Time to answer a chat completion (to the last byte)",
            ["task", "role"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.overhead = Histogram(
            "stillhouse_overhead_seconds",
            "The gateway's own time before an answer's headers, upstream waits excluded "
            "(x-stillhouse-overhead-ms)",
            ["task"],
            registry=self.registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
        )
        self.upstream_errors = Counter(
            "stillhouse_upstream_errors",
            "Upstream failures after retries",
            ["model"],
            registry=self.registry,
        )
        self.registry.register(_CaptureCollector(writer))

    def render(self) -> bytes:
        return generate_latest(self.registry)

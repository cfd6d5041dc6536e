"""The gateway's own overhead as it reports it (`x-stillhouse-overhead-ms`), with and without
OpenTelemetry spans.

    .venv/bin/python bench/overhead.py [--requests 200] [--out bench/results/overhead.json]

What it measures: N sequential requests (closed loop, one at a time: the figure is the gateway's
own time on an idle process, not under load), non-streamed then streamed, through an in-process
gateway (uvicorn on loopback, SQLite store, capture on) to a loopback upstream (tests/upstream.py,
5 ms latency). Twice: without [telemetry], and with it pointing at a loopback OTLP/HTTP receiver
(tests/otlp_receiver.py). Reports p50/p95/p99 of the header, and the client-side wall time of
each request for scale. The first 20 requests of each run warm up and are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stillhouse.gateway import create_app
from stillhouse.stats import percentile
from tests.conftest import make_config
from tests.otlp_receiver import running_receiver
from tests.upstream import ServerThread, UpstreamBehaviour, running_upstream

WARMUP = 20
BODY = {"model": "support", "messages": [{"role": "user", "content": "where is my parcel"}]}


def summary(values: list[float]) -> dict[str, float]:
    return {f"p{q}": round(percentile(values, q) or 0.0, 3) for q in (50, 95, 99)}


def run(requests: int, telemetry: dict[str, Any] | None) -> dict[str, Any]:
    behaviour = UpstreamBehaviour(latency=0.005)
    with tempfile.TemporaryDirectory() as tmp, running_upstream(behaviour) as (upstream_url, _):
        extra = {"telemetry": telemetry} if telemetry else {}
        app = create_app(make_config(Path(tmp), upstream_url, **extra))
        server = ServerThread(app).start()
        result: dict[str, Any] = {}
        try:
            with httpx.Client(base_url=server.url + "/v1") as client:
                for stream in (False, True):
                    header: list[float] = []
                    wall: list[float] = []
                    for i in range(WARMUP + requests):
                        began = time.perf_counter()
                        with client.stream(
                            "POST", "/chat/completions", json={**BODY, "stream": stream}
                        ) as reply:
                            reply.read()
                        elapsed = (time.perf_counter() - began) * 1000
                        assert reply.status_code == 200, reply.text
                        if i >= WARMUP:
                            header.append(float(reply.headers["x-stillhouse-overhead-ms"]))
                            wall.append(elapsed)
                    result["streamed" if stream else "whole"] = {
                        "overhead_ms": summary(header),
                        "client_wall_ms": summary(wall),
                    }
        finally:
            server.stop()
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report: dict[str, Any] = {
        "settings": {
            "requests": args.requests,
            "warmup": WARMUP,
            "upstream_latency_ms": 5,
            "store": "sqlite",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
            "load": "sequential, one request at a time",
        },
        "without_telemetry": run(args.requests, None),
    }
    with running_receiver() as (receiver_url, received):
        report["with_telemetry"] = run(args.requests, {"otlp_endpoint": receiver_url})
        report["with_telemetry"]["spans_received"] = len(received.spans)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

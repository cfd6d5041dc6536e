"""Time the dashboard's overview and task pages on a SQLite store of 100,000 calls.

Run: .venv/bin/python bench/dashboard.py [--calls 100000]. Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from starlette.testclient import TestClient

from stillhouse.config import parse_config
from stillhouse.gateway import create_app
from stillhouse.store import Call, open_store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    config = parse_config(
        {
            "store": {"url": "sqlite:///bench.db"},
            "models": {
                "teacher": {"provider": "openai", "model": "gpt-4.1"},
                "student": {"provider": "openai", "model": "ft:gpt-4o-mini"},
            },
            "tasks": {f"task{i}": {"teacher": "teacher", "student": "student"} for i in range(4)},
        },
        tmp,
    )
    rng = random.Random(0)
    now = time.time()
    calls = []
    for i in range(args.calls):
        role = "student" if rng.random() < 0.6 else "teacher"
        calls.append(
            Call(
                id=f"call_{i:08d}",
                task=f"task{i % 4}",
                request={"messages": [{"role": "user", "content": f"question {i} " * 20}]},
                response={"choices": [{"message": {"content": f"answer {i} " * 30}}]},
                role=role,
                model=role,
                route_reason="rollout:60%" if role == "student" else "rollout",
                created_at=now - rng.random() * 6 * 86_400,
                latency_ms=rng.uniform(50, 900),
                input_tokens=rng.randint(200, 1500),
                output_tokens=rng.randint(50, 600),
                cost=rng.uniform(0.0005, 0.01),
            )
        )
    with open_store(config.store.url) as store:
        for start in range(0, len(calls), 5000):
            store.insert_calls(calls[start : start + 5000])
    app = create_app(config)
    with TestClient(app) as client:
        for path in ("/", "/tasks/task0", "/calls"):
            times = []
            for _ in range(5):
                started = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
            print(
                f"{path:<14} median {statistics.median(times):6.0f} ms  "
                f"min {min(times):6.0f} ms  ({args.calls:,} calls)"
            )


if __name__ == "__main__":
    main()

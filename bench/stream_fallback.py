"""What holding a student's stream for the confidence fallback costs: time to first token and to
the last byte of streamed student answers through the gateway, `routing.stream_fallback =
"buffer"` against `"none"`.

    .venv/bin/python bench/stream_fallback.py [--model smollm2-135m-instruct] [--n 20]

The student is a packaged local model in the gateway's process (provider `local`), the teacher a
loopback upstream (never asked: the threshold is set so low that no answer falls back, so both
modes send the student's own answer). Requests are sent one at a time with the openai SDK; the
answer length is set with max_tokens (the model writes until it). TTFT is the time to the first
content token the client sees. Results go to bench/results/stream_fallback.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402

from stillhouse.config import parse_config  # noqa: E402
from stillhouse.gateway import create_app  # noqa: E402
from stillhouse.routing import RoutingTable, TaskRoute  # noqa: E402
from stillhouse.stats import percentile  # noqa: E402
from tests.upstream import ServerThread, running_upstream  # noqa: E402


def measure(model: str, mode: str, max_tokens: int, n: int, folder: Path) -> dict[str, Any]:
    with running_upstream() as (teacher_url, _):
        config = parse_config(
            {
                "store": {"url": f"sqlite:///{folder / f'{mode}-{max_tokens}.db'}"},
                "models": {
                    "teacher": {
                        "provider": "openai-compatible",
                        "base_url": teacher_url,
                        "model": "t",
                    },
                    "student": {"provider": "local", "model": model},
                },
                "tasks": {
                    "support": {
                        "teacher": "teacher",
                        "student": "student",
                        "routing": {"stream_fallback": mode, "shadow_rate": 0.0},
                    }
                },
            },
            folder,
        )
        table = RoutingTable({"support": TaskRoute(state="serving", share=1.0, threshold=-1e9)})
        server = ServerThread(create_app(config, routing=table)).start()
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        ttft, total, tokens = [], [], []
        try:
            for i in range(n + 2):  # two warm-up requests (the model loads on the first)
                started = time.perf_counter()
                first = None
                count = 0
                stream = client.chat.completions.create(
                    model="support",
                    messages=[{"role": "user", "content": f"Write about the sea, part {i}."}],
                    max_tokens=max_tokens,
                    stream=True,
                )
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        count += 1
                        if first is None:
                            first = time.perf_counter()
                end = time.perf_counter()
                if i >= 2 and first is not None:
                    ttft.append((first - started) * 1000)
                    total.append((end - started) * 1000)
                    tokens.append(count)
        finally:
            server.stop()
    return {
        "mode": mode,
        "max_tokens": max_tokens,
        "n": len(ttft),
        "content_chunks_mean": statistics.mean(tokens),
        "ttft_p50_ms": round(percentile(ttft, 50) or 0, 1),
        "ttft_p95_ms": round(percentile(ttft, 95) or 0, 1),
        "total_p50_ms": round(percentile(total, 50) or 0, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, nargs="+", default=[16, 64])
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for max_tokens in args.max_tokens:
            for mode in ("none", "buffer"):
                row = measure(args.model, mode, max_tokens, args.n, Path(tmp))
                print(json.dumps(row))
                rows.append(row)
    out = ROOT / "bench" / "results" / "stream_fallback.json"
    doc = {"model": args.model, "threads": 1, "cpu": "2 cores (shared)", "rows": rows}
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

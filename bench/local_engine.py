"""Benchmark the local engine on the packaged models: tokens/s and p50/p95 request latency at
concurrency 1 and 8, greedy decoding, on whatever this machine has (CPU here).

Requests go straight to the engine (the same path serve-model and the `local` provider take,
minus HTTP). Run: python bench/local_engine.py [--models NAME ...] [--threads N] [--json OUT]
(raw results go to bench/results/local_engine.json, not committed)
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from typing import Any

from stillhouse.stats import percentile

PROMPTS = [
    "I lost my debit card, what should I do?",
    "Write a Python function that reverses a string.",
    "What is the capital of France?",
    "Explain what a hash map is in two sentences.",
    "Give me three tips for a job interview.",
    "Translate 'good morning' into Spanish and French.",
    "Classify the intent of: 'where is my parcel?'. Answer in JSON.",
    "Summarise the plot of Romeo and Juliet in one sentence.",
]


def run_level(engine: Any, concurrency: int, requests: int, max_tokens: int) -> dict[str, Any]:
    from stillhouse.engine.runtime import SamplingParams

    params = SamplingParams(max_tokens=max_tokens)
    latencies: list[float] = []
    tokens = 0
    lock = threading.Lock()
    next_index = iter(range(requests))

    def worker() -> None:
        nonlocal tokens
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            started = time.perf_counter()
            done = engine.generate([{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], params)
            with lock:
                latencies.append(time.perf_counter() - started)
                tokens += done.completion_tokens

    steps_before, tokens_before = engine.stats.steps, engine.stats.tokens
    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    steps = engine.stats.steps - steps_before
    return {
        "concurrency": concurrency,
        "requests": requests,
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "p50_ms": round((percentile(latencies, 50) or 0) * 1000),
        "p95_ms": round((percentile(latencies, 95) or 0) * 1000),
        # requests advanced per decode step (prefill steps included)
        "mean_batch": round((engine.stats.tokens - tokens_before) / max(steps, 1), 2),
    }


def bench_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from stillhouse.engine.runtime import Engine, SamplingParams

    started = time.perf_counter()
    engine = Engine.load(name, threads=args.threads, max_batch=8)
    load_s = time.perf_counter() - started
    engine.generate([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=4))  # warm-up
    levels = [
        run_level(engine, 1, args.requests_c1, args.max_tokens),
        run_level(engine, 8, args.requests_c8, args.max_tokens),
    ]
    engine.close()
    return {"model": name, "load_s": round(load_s, 1), "levels": levels}


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--models", nargs="+", default=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"]
    )
    # 1 by default: on a shared 2-core machine one torch thread degrades gracefully, 2 do not
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests-c1", type=int, default=8)
    parser.add_argument("--requests-c8", type=int, default=16)
    parser.add_argument(
        "--json", default="bench/results/local_engine.json", help="where to write raw results"
    )
    args = parser.parse_args()

    import torch

    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": args.threads,
            "cuda": torch.cuda.is_available(),
            "load_average_before": os.getloadavg()[0],
        },
        "max_tokens": args.max_tokens,
        "models": [bench_model(name, args) for name in args.models],
    }
    results["machine"]["load_average_after"] = os.getloadavg()[0]
    print(
        "| model | load s | concurrency | requests | tokens | tokens/s | p50 ms | p95 ms |"
        " mean batch |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for model in results["models"]:
        for level in model["levels"]:
            print(
                f"| {model['model']} | {model['load_s']} | {level['concurrency']} | "
                f"{level['requests']} | {level['tokens']} | {level['tokens_per_s']} | "
                f"{level['p50_ms']} | {level['p95_ms']} | {level['mean_batch']} |"
            )
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    print(json.dumps(results["machine"]))


if __name__ == "__main__":
    main()

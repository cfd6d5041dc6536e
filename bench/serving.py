"""Compare the local engines (torch, llama.cpp) on the packaged models: decode tokens/s at 1, 4
and 16 concurrent requests, prefill tokens/s, time to first token, and the p50/p95 latency of a
triage answer (a shared system prompt, a short JSON answer).

Requests go straight to each engine through `submit` (the path serve-model and the `local`
provider take, minus HTTP); greedy decoding. Run:
    python bench/serving.py [--models NAME ...] [--engines torch llama-cpp] [--levels 1 4 16]
        [--threads 2] [--max-tokens 64] [--json bench/results/serving.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from typing import Any

from stillhouse.engine.sequence import Delta, Event, Finished, SamplingParams
from stillhouse.stats import percentile

MODELS = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"]
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a hash map works.",
    "Give me ten tips for a job interview.",
    "Describe the water cycle for a child.",
    "Write a Python function that reverses a linked list, and explain it.",
    "Summarise the plot of Romeo and Juliet.",
    "List the planets of the solar system with one fact each.",
    "Explain what inflation is and why it matters.",
]
TRIAGE_SYSTEM = (
    "You triage a bank's support tickets. Answer with one JSON object and nothing else: "
    '{"intent": one of card_lost, refund, transfer_failed, balance, other, '
    '"urgent": true or false}. Urgent means money is at risk now.'
)
TICKETS = [
    "I lost my debit card yesterday, please block it!",
    "Can I get a refund for the double charge on my account?",
    "My transfer to my landlord failed twice today.",
    "What is my current balance?",
    "Someone is using my card abroad right now!",
    "How do I change my address?",
    "The refund from the shop never arrived.",
    "I sent money to the wrong account, help!",
]


def ask(engine: Any, messages: list[dict[str, str]], params: SamplingParams) -> dict[str, Any]:
    """One request, timed: seconds to its first token and to its end, and its token counts."""
    done = threading.Event()
    seen: dict[str, Any] = {}
    started = time.perf_counter()

    def emit(event: Event) -> None:
        if isinstance(event, Delta) and "first" not in seen:
            seen["first"] = time.perf_counter() - started
        if isinstance(event, Finished | BaseException):
            seen["end"] = time.perf_counter() - started
            seen["event"] = event
            done.set()

    engine.submit(engine.prompt_ids(messages), params, emit)
    done.wait()
    event = seen["event"]
    if isinstance(event, BaseException):
        raise event
    return {
        "ttft_s": seen.get("first", seen["end"]),
        "latency_s": seen["end"],
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "text": event.text,
    }


def decode_level(engine: Any, concurrency: int, max_tokens: int) -> dict[str, Any]:
    """`concurrency` clients at once, each asking twice (at least 4 requests in all)."""
    requests = max(4, 2 * concurrency)
    params = SamplingParams(max_tokens=max_tokens)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    order = iter(range(requests))

    def client() -> None:
        while True:
            with lock:
                i = next(order, None)
            if i is None:
                return
            prompt = f"{PROMPTS[i % len(PROMPTS)]} (request {i})"
            result = ask(engine, [{"role": "user", "content": prompt}], params)
            with lock:
                results.append(result)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    tokens = sum(r["completion_tokens"] for r in results)
    latencies = [r["latency_s"] for r in results]
    ttfts = [r["ttft_s"] for r in results]
    return {
        "concurrency": concurrency,
        "requests": requests,
        "completion_tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        "ttft_p50_s": round(percentile(ttfts, 50), 3),
        "latency_p50_s": round(percentile(latencies, 50), 3),
        "latency_p95_s": round(percentile(latencies, 95), 3),
    }


def prefill(engine: Any, runs: int = 3) -> dict[str, Any]:
    """A ~600-token prompt that shares nothing with the last one, one token out."""
    rates, ttfts = [], []
    for i in range(runs):
        text = " ".join(PROMPTS) * 6
        messages = [
            {"role": "system", "content": f"Session {i * 7919}: read this and answer briefly."},
            {"role": "user", "content": text},
        ]
        result = ask(engine, messages, SamplingParams(max_tokens=1))
        rates.append(result["prompt_tokens"] / result["latency_s"])
        ttfts.append(result["ttft_s"])
    return {
        "prompt_tokens": result["prompt_tokens"],
        "prefill_tokens_per_s": round(percentile(rates, 50), 1),
        "ttft_long_prompt_s": round(percentile(ttfts, 50), 3),
    }


def triage(engine: Any, rounds: int = 2) -> dict[str, Any]:
    """The demo's kind of request, one at a time: shared system prompt, short JSON answer."""
    latencies, ttfts, answers = [], [], []
    params = SamplingParams(max_tokens=48)
    for _ in range(rounds):
        for ticket in TICKETS:
            messages = [
                {"role": "system", "content": TRIAGE_SYSTEM},
                {"role": "user", "content": ticket},
            ]
            result = ask(engine, messages, params)
            latencies.append(result["latency_s"])
            ttfts.append(result["ttft_s"])
            answers.append(result["text"])
    return {
        "requests": len(latencies),
        "ttft_p50_s": round(percentile(ttfts, 50), 3),
        "latency_p50_s": round(percentile(latencies, 50), 3),
        "latency_p95_s": round(percentile(latencies, 95), 3),
        "example_answer": answers[0],
    }


def load(engine_kind: str, model: str, threads: int) -> Any:
    if engine_kind == "llama-cpp":
        from stillhouse.engine.llamacpp import LlamaCppEngine

        return LlamaCppEngine.load(model, threads=threads)
    import torch

    from stillhouse.engine.runtime import Engine

    torch.set_num_threads(threads)
    return Engine.load(model, max_batch=16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--engines", nargs="+", default=["torch", "llama-cpp"])
    parser.add_argument("--levels", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", default="bench/results/serving.json")
    args = parser.parse_args()
    runs = []
    for model in args.models:
        for kind in args.engines:
            started = time.perf_counter()
            engine = load(kind, model, args.threads)
            loaded = time.perf_counter() - started
            ask(engine, [{"role": "user", "content": "hello"}], SamplingParams(max_tokens=4))
            row: dict[str, Any] = {"model": model, "engine": kind, "load_s": round(loaded, 2)}
            row["prefill"] = prefill(engine)
            row["decode"] = [decode_level(engine, c, args.max_tokens) for c in args.levels]
            row["triage"] = triage(engine)
            engine.close()
            runs.append(row)
            print(json.dumps(row), flush=True)
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[:3]
    doc = {
        "settings": {
            "threads": args.threads,
            "max_tokens": args.max_tokens,
            "levels": args.levels,
            "decoding": "greedy",
            "torch_engine": "float32, max_batch 16, prefix cache on",
            "llama_cpp_engine": "llama-cpp-python, GGUF as packaged, one request at a time",
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "loadavg_after": load_after,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "runs": runs,
    }
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""Training benchmark: LoRA (r=16, alpha=32, q/k/v/o) on the packaged SmolLM2-135M with our plain
torch loop, on this machine's CPU (or its GPU when it has one).

Reports steps/s, tokens/s (every token through the model, prompt and answer) and the process's
peak resident memory, next to its memory with the model loaded and before training. The data is
a generated request -> JSON labelling task with a system prompt, ~100 tokens per example.

    .venv/bin/python bench/train.py [--steps 20] [--batch 8] [--threads 2] [--out bench/results]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stillhouse.train.config import TrainSettings

SYSTEM = (
    "You are the support assistant of Northwind Bank. Read the customer's message and answer "
    "with one JSON object: the intent, the urgency and the product concerned."
)
INTENTS = ["card_lost", "refund", "delivery", "cancel", "address_change", "loan_question"]
PRODUCTS = ["debit card", "credit card", "savings account", "mortgage", "subscription"]


def examples(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        intent, product = INTENTS[i % len(INTENTS)], rng.choice(PRODUCTS)
        request = (
            f"Hello, this is about my {product}. I need help with {intent.replace('_', ' ')} "
            f"as soon as possible, reference {rng.randint(10000, 99999)}. Thank you."
        )
        reply = json.dumps(
            {"intent": intent, "urgency": rng.choice(["low", "high"]), "product": product}
        )
        out.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": request},
                    {"role": "assistant", "content": reply},
                ]
            }
        )
    return out


def rss_mb() -> float:
    # ru_maxrss is in KiB on Linux: the peak so far, which is what a training run must fit in
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()

    import torch

    from stillhouse.train.lora import load_base, pick_device, train

    torch.set_num_threads(args.threads)
    device = pick_device("auto")
    started = time.perf_counter()
    before_load = rss_mb()
    model, tokenizer, _ = load_base(args.model, device)
    params = sum(p.numel() for p in model.parameters())
    loaded = rss_mb()
    sample = [tokenizer.apply_chat_template(e["messages"], tokenize=False) for e in examples(8)]
    tokens_per_example = sum(len(tokenizer(t)["input_ids"]) for t in sample) // len(sample)
    del model  # train() loads its own copy; the peak below is that run's
    load_seconds = time.perf_counter() - started

    settings = TrainSettings(
        base_model=args.model,
        max_steps=args.steps,
        batch_size=args.batch,
        threads=args.threads,
        eval_every=args.steps,  # one validation evaluation, at the end
    )
    with tempfile.TemporaryDirectory() as out:
        result = train(
            settings,
            examples(args.steps * args.batch),
            examples(16, seed=1),
            out,
            progress=sys.stderr.isatty(),
        )
    doc = {
        "benchmark": "train",
        "when": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform()},
        "device": result.device,
        "model": args.model,
        "parameters": params,
        "lora": {
            "r": settings.r,
            "alpha": settings.alpha,
            "targets": list(settings.target_modules),
        },
        "steps": result.steps,
        "batch": args.batch,
        "threads": args.threads,
        "tokens_per_example": tokens_per_example,
        "tokens": result.tokens,
        "seconds": round(result.seconds, 2),
        "seconds_per_step": round(result.seconds / max(result.steps, 1), 3),
        "tokens_per_second": round(result.tokens_per_second, 1),
        "validation_loss": [round(h["validation_loss"], 4) for h in result.history],
        "train_loss": round(result.train_loss, 4),
        "rss_mb": {
            "before_load": round(before_load),
            "model_loaded": round(loaded),
            "peak": round(rss_mb()),
        },
        "load_seconds": round(load_seconds, 1),
    }
    print(json.dumps(doc, indent=2))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (Path(args.out) / f"train-{stamp}.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The two costs the demo is made of, each measured the old way and the new way on this machine:

1. the teacher (Qwen2.5-Coder-0.5B) answering the demo's triage tickets at concurrency 16:
   float32 without the prefix cache at batch 8 (before), with it, and in bfloat16 at batch 16
   (the demo's settings); float32 answers with and without the cache are compared;
2. one LoRA step on SmolLM2-135M over 8 tickets: the model's own loss (before), the loss that
   runs the shared system prompt once and the vocabulary projection only at labels, and that in
   bfloat16 autocast; the losses are compared.

Run: .venv/bin/python bench/demo_speed.py [--tickets 32] [--intents 8] [--steps 3]
(raw results go to bench/results/demo_speed.json, not committed; docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from stillhouse.stats import percentile


def teacher(tickets: int, intents: int) -> dict[str, Any]:
    import torch

    from stillhouse.demo.tickets import Tickets
    from stillhouse.engine.runtime import Engine, SamplingParams, load_model

    torch.set_num_threads(2)
    source = Tickets(0, intents)
    asks = [source.next()[1] for _ in range(tickets)]
    params = SamplingParams(max_tokens=64)
    out: dict[str, Any] = {}
    answers: dict[str, list[str]] = {}
    for name, dtype, cache, batch in (
        ("float32, no prefix cache, batch 8", "float32", False, 8),
        ("float32, prefix cache, batch 8", "float32", True, 8),
        ("bfloat16 (auto), prefix cache, batch 16", "auto", True, 16),
    ):
        model, tokenizer = load_model("qwen2.5-coder-0.5b-instruct", dtype=dtype)
        engine = Engine(model, tokenizer, prefix_cache=cache, max_batch=batch)
        try:
            engine.generate(asks[0], params)  # warm-up, untimed
            started = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                replies = list(pool.map(engine.generate, asks, [params] * len(asks)))
            seconds = time.perf_counter() - started
        finally:
            engine.close()
        answers[name] = [r.text for r in replies]
        out[name] = {
            "seconds": round(seconds, 2),
            "per_ticket_s": round(seconds / tickets, 3),
            "prefix_tokens_reused": engine.prefixes.hits if engine.prefixes else 0,
        }
        print(f"teacher  {name:<42} {seconds:6.1f} s for {tickets} tickets", flush=True)
    plain, cached = list(answers.values())[:2]
    out["float32 answers equal with and without the cache"] = sum(
        a == b for a, b in zip(plain, cached, strict=True)
    )
    return out


def lora_step(intents: int, steps: int) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model

    from stillhouse.demo.tickets import Tickets, label
    from stillhouse.train.data import collate, encode_all
    from stillhouse.train.lora import load_base
    from stillhouse.train.loss import batch_loss

    torch.set_num_threads(2)
    source = Tickets(0, intents)
    examples = []
    for _ in range(8):
        intent, messages = source.next()
        examples.append({"messages": [*messages, {"role": "assistant", "content": label(intent)}]})
    model, tokenizer, _ = load_base("smollm2-135m-instruct", "cpu")
    torch.manual_seed(0)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets)
    model = get_peft_model(model, lora)
    model.train()
    batch = collate(encode_all(tokenizer, examples, 256), int(tokenizer.pad_token_id), "cpu")
    out: dict[str, Any] = {"tokens": int(batch["attention_mask"].sum())}
    for name, compute in (
        ("model's own loss (float32)", lambda: model(**batch).loss),
        ("shared prefix, logits at labels (float32)", lambda: batch_loss(model, batch)),
        ("shared prefix, bfloat16 autocast", lambda: batch_loss(model, batch, cpu_bf16=True)),
    ):
        times, loss = [], 0.0
        for _ in range(steps + 1):  # the first is a warm-up
            started = time.perf_counter()
            value = compute()
            value.backward()
            model.zero_grad()
            times.append(time.perf_counter() - started)
            loss = float(value.detach())
        step = percentile(times[1:], 50) or 0.0
        out[name] = {"step_s": round(step, 2), "loss": round(loss, 6)}
        print(f"training {name:<42} {step:5.2f} s a step, loss {loss:.6f}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=32)
    parser.add_argument("--intents", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed LoRA steps per variant")
    args = parser.parse_args()
    doc = {
        "teacher": teacher(args.tickets, args.intents),
        "lora_step": lora_step(args.intents, args.steps),
    }
    out = Path(__file__).parent / "results" / "demo_speed.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

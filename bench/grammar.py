"""Benchmark constrained decoding on this CPU, in two parts.

1. libraries: for each of xgrammar, llguidance and outlines-core that is installed, the demo's
   triage schema (22 intents, 3 priorities) compiled for the SmolLM2 tokenizer; then the
   per-token cost of computing the allowed-token mask and applying it to a logits row, over the
   tokens of real answers (median and p90 over ~256 tokens). The apply step is the same torch
   bit-unpacking for all three, so the difference is the library's own mask computation.
2. engine: tokens/s of the torch engine with SmolLM2-135M on triage prompts, with and without
   the schema, at concurrency 1 and 4 (greedy), and how many answers parse as the schema asks.

Run: python bench/grammar.py [--json bench/results/grammar.json] [--skip-engine]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import threading
import time
from typing import Any

from stillhouse.demo.tickets import INTENTS, Tickets
from stillhouse.stats import percentile

MODEL = "smollm2-135m-instruct"
SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"enum": list(INTENTS)},
        "priority": {"enum": ["high", "medium", "low"]},
    },
    "required": ["intent", "priority"],
}


# -- part 1: the libraries ---------------------------------------------------------------------
def _apply(logits: Any, bitmask: Any) -> None:
    import torch

    bits = (bitmask.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
    allowed = bits.bool().view(bitmask.shape[0], -1)[:, : logits.shape[1]]
    logits.masked_fill_(~allowed, float("-inf"))


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed (outlines-core wants each token's bytes)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def _xgrammar(tok: Any, vocab: int, schema: str) -> tuple[Any, Any, Any, Any]:
    import xgrammar

    def setup() -> Any:
        info = xgrammar.TokenizerInfo.from_huggingface(tok, vocab_size=vocab)
        return xgrammar.GrammarCompiler(info, max_threads=1)

    return (
        setup,
        lambda compiler: compiler.compile_json_schema(schema),
        lambda compiled: xgrammar.GrammarMatcher(compiled),
        (lambda m, mask: m.fill_next_token_bitmask(mask), lambda m, t: m.accept_token(t)),
    )


def _llguidance(tok: Any, vocab: int, schema: str) -> tuple[Any, Any, Any, Any]:
    import llguidance.hf
    from llguidance import LLMatcher

    def compile_(lltok: Any) -> Any:
        grammar = LLMatcher.grammar_from_json_schema(schema)
        error = LLMatcher(lltok, grammar).get_error()
        assert not error, error
        return (lltok, grammar)

    return (
        lambda: llguidance.hf.from_tokenizer(tok, n_vocab=vocab),
        compile_,
        lambda compiled: LLMatcher(*compiled),
        (
            lambda m, mask: m.unsafe_compute_mask_ptr(mask.data_ptr(), mask.numel() * 4),
            lambda m, t: m.consume_token(t),
        ),
    )


def _outlines(tok: Any, vocab: int, schema: str) -> tuple[Any, Any, Any, Any]:
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    def setup() -> Any:
        decode, special, tokens = _byte_decoder(), set(tok.all_special_ids), {}
        for text, i in tok.get_vocab().items():
            if i not in special and i < vocab:
                tokens.setdefault(bytes(decode[c] for c in text), []).append(i)
        return Vocabulary(tok.eos_token_id, tokens)

    def accept(guide: Any, token: int) -> None:
        if token != tok.eos_token_id:  # the guide has no EOS transition: it is final
            guide.advance(token)

    return (
        setup,
        lambda vocabulary: Index(build_regex_from_schema(schema), vocabulary),
        lambda index: Guide(index),
        (lambda g, mask: g.write_mask_into(mask.data_ptr(), mask.numel(), 4), accept),
    )


LIBRARIES = {"xgrammar": _xgrammar, "llguidance": _llguidance, "outlines_core": _outlines}


def bench_library(name: str, tok: Any, vocab: int, rounds: int) -> dict[str, Any]:
    import torch

    setup, compile_, fresh, (fill, accept) = LIBRARIES[name](tok, vocab, json.dumps(SCHEMA))
    started = time.perf_counter()
    context = setup()
    setup_s = time.perf_counter() - started
    started = time.perf_counter()
    compiled = compile_(context)
    compile_s = time.perf_counter() - started
    answers = [json.dumps({"intent": i, "priority": p}) for i, (p, _) in list(INTENTS.items())[:4]]
    sequences = [[*tok.encode(a), tok.eos_token_id] for a in answers]
    bitmask = torch.full((1, (vocab + 31) // 32), -1, dtype=torch.int32)
    logits = torch.randn(1, vocab)
    fills, totals = [], []
    for _ in range(rounds):
        for sequence in sequences:
            matcher = fresh(compiled)
            for token in sequence:
                row = logits.clone()
                a = time.perf_counter()
                fill(matcher, bitmask)
                b = time.perf_counter()
                _apply(row, bitmask)
                c = time.perf_counter()
                assert row[0, token] > float("-inf"), (name, token)  # the answer stays allowed
                accept(matcher, token)
                fills.append(b - a)
                totals.append(c - a)

    def us(values: list[float], q: float) -> float:
        return round((percentile(values, q) or 0.0) * 1e6, 1)

    return {
        "version": _version(name),
        "tokenizer_setup_s": round(setup_s, 3),
        "compile_s": round(compile_s, 4),
        "tokens": len(fills),
        "mask_us_p50": us(fills, 50),
        "mask_us_p90": us(fills, 90),
        "mask_and_apply_us_p50": us(totals, 50),
        "mask_and_apply_us_p90": us(totals, 90),
    }


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name.replace("_", "-"))


# -- part 2: the engine ------------------------------------------------------------------------
def run_level(
    engine: Any, requests: list[list[dict[str, str]]], concurrency: int, params: Any
) -> dict[str, Any]:
    latencies: list[float] = []
    texts: list[str] = []
    tokens = 0
    lock = threading.Lock()
    queue = iter(requests)

    def worker() -> None:
        nonlocal tokens
        while True:
            with lock:
                messages = next(queue, None)
            if messages is None:
                return
            started = time.perf_counter()
            done = engine.generate(messages, params)
            with lock:
                latencies.append(time.perf_counter() - started)
                tokens += done.completion_tokens
                texts.append(done.text)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "requests": len(requests),
        "tokens": tokens,
        "tokens_per_request": round(tokens / len(requests), 1),
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 2),
        "p50_ms": round((percentile(latencies, 50) or 0) * 1000),
        "follows_schema": sum(_follows(t) for t in texts),
        "sample": texts[0],
    }


def _follows(text: str) -> bool:
    try:
        answer = json.loads(text)
    except ValueError:
        return False
    return (
        isinstance(answer, dict)
        and set(answer) == {"intent", "priority"}
        and answer["intent"] in INTENTS
        and answer["priority"] in ("high", "medium", "low")
    )


def bench_engine(args: argparse.Namespace) -> dict[str, Any]:
    from stillhouse.engine.runtime import Engine
    from stillhouse.engine.sequence import SamplingParams

    engine = Engine.load(MODEL, threads=args.threads, max_batch=8)
    tickets = Tickets(seed=0)
    asks = [tickets.next()[1] for _ in range(12)]  # the system prompt names the labels
    schema = json.dumps(SCHEMA)
    warm = SamplingParams(max_tokens=4, json_schema=schema)
    engine.generate(asks[0], warm)  # loads the compiler, compiles the schema
    levels = []
    for concurrency, n in ((1, args.requests_c1), (4, args.requests_c4)):
        for constrained in (False, True):
            params = SamplingParams(
                max_tokens=args.max_tokens, json_schema=schema if constrained else None
            )
            level = run_level(engine, asks[:n], concurrency, params)
            levels.append({"schema": constrained, **level})
            print(json.dumps(levels[-1]), flush=True)
    engine.close()
    return {"model": MODEL, "max_tokens": args.max_tokens, "levels": levels}


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=4, help="passes over 4 answers (part 1)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--requests-c1", type=int, default=6)
    parser.add_argument("--requests-c4", type=int, default=12)
    parser.add_argument("--skip-engine", action="store_true")
    parser.add_argument("--json", default="bench/results/grammar.json")
    args = parser.parse_args()

    import torch

    from stillhouse.engine.runtime import load_model

    torch.set_num_threads(args.threads)
    model, tok = load_model(MODEL, threads=args.threads)
    vocab = int(model.config.vocab_size)
    del model
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": args.threads,
            "load_average_before": os.getloadavg()[0],
        },
        "schema": SCHEMA,
        "libraries": {
            name: bench_library(name, tok, vocab, args.rounds)
            for name in LIBRARIES
            if importlib.util.find_spec(name.split(".")[0]) is not None
        },
    }
    print(json.dumps(results["libraries"], indent=1), flush=True)
    if not args.skip_engine:
        results["engine"] = bench_engine(args)
    results["machine"]["load_average_after"] = os.getloadavg()[0]
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    print(json.dumps(results["machine"]))


if __name__ == "__main__":
    main()

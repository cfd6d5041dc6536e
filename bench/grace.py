"""Grace readiness benchmark: what one controller tick pays to count a task's intents the way
curation will, on N captured teacher calls that carry no metadata.intent (SQLite).

Times the first count (read, dedupe, TF-IDF k-means), a tick with no new call (cached), a tick
after one new call (counted again), and the failed-gate wait's count of new distinct requests.

    .venv/bin/python bench/grace.py [--n 5000] [--out bench/results]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

from stillhouse.config import parse_config
from stillhouse.curate.readiness import GraceCounter, grace_readiness
from stillhouse.store import Call, new_id, open_store

VERBS = ("cancel", "change", "check", "report", "order", "refund", "update", "close", "open")
THINGS = ("card", "address", "subscription", "password", "loan", "transfer", "account", "pin")
FILLER = ("please", "today", "urgently", "again", "for my wife", "before friday", "online")


def calls(n: int, start: float, seed: int = 0) -> list[Call]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = (
            f"I want to {rng.choice(VERBS)} my {rng.choice(THINGS)} {rng.choice(FILLER)}, "
            f"reference {rng.randrange(10**6)}"
        )
        out.append(
            Call(
                id=new_id("call"),
                task="support",
                created_at=start + i,
                request={"model": "support", "messages": [{"role": "user", "content": text}]},
                response={"choices": [{"message": {"role": "assistant", "content": "Done."}}]},
            )
        )
    return out


def timed(fn):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - started, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(
            {
                "store": {"url": "sqlite:///grace.db"},
                "models": {"t": {"provider": "openai", "model": "gpt-4.1"}},
                "tasks": {"support": {"teacher": "t"}},
            },
            Path(tmp),
        )
        counter = GraceCounter()
        with open_store(config.store.url) as store:
            store.insert_calls(calls(args.n, 1_700_000_000.0))
            first, cold = timed(lambda: grace_readiness(store, config, counter=counter))
            _, cached = timed(lambda: grace_readiness(store, config, counter=counter))
            store.insert_calls(calls(1, 1_800_000_000.0, seed=1))
            _, one_new = timed(lambda: grace_readiness(store, config, counter=counter))
            since = 1_700_000_000.0 + args.n // 2
            fresh, wait = timed(lambda: counter.new_distinct(store, "support", since))
            _, wait_cached = timed(lambda: counter.new_distinct(store, "support", since))
    result = {
        "bench": "grace",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "settings": {"calls": args.n, "metadata_intent": False, "curate.intents": "auto"},
        "unique_intents": first["support"]["unique_intents"],
        "intent_method": first["support"]["intent_method"],
        "seconds": {
            "first_count": cold,
            "tick_no_new_call": cached,
            "tick_one_new_call": one_new,
            "new_distinct_first": wait,
            "new_distinct_cached": wait_cached,
        },
        "new_distinct": fresh,
    }
    print(json.dumps(result, indent=2))
    out = Path(args.out) / "grace.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""A task the project never tuned for, run as a new user runs it: product reviews labelled
positive / negative / mixed in plain text (`--task reviews`: no JSON Schema, metric `exact`), or
summarised in a free-text sentence (`--task summaries`: metric `similarity`); callers that send
no `metadata.intent`, the teacher behind an OpenAI-compatible server, the `stillhouse init`
defaults otherwise (grace 300 conversations / 50 intents, gate agreement 0.92, no tier).

Three steps, each a subcommand, in a folder of its own:

    .venv/bin/python bench/unseen_task.py config --dir /tmp/nu      # writes stillhouse.toml
    .venv/bin/stillhouse serve-model qwen2.5-coder-0.5b-instruct --engine llama-cpp --port 8501 &
    (cd /tmp/nu && ../../work/main/.venv/bin/stillhouse serve &)     # the gateway, port 8400
    .venv/bin/python bench/unseen_task.py traffic --n 400 --seed 1  # as often as wanted
    .venv/bin/python bench/unseen_task.py read --dir /tmp/nu --out bench/results/unseen_task.json

`read` takes everything from the folder's store through the store's API (lifecycle moves with
their reasons, datasets, candidates, evaluations) and keeps the config it ran under, so the
figures are what the product recorded, not what this script saw.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import platform
import random
from collections import Counter
from pathlib import Path
from typing import Any

SYSTEM = (
    "You label customer reviews for an online shop. Read the review and answer with exactly "
    "one word: positive, negative or mixed. No punctuation, no explanation."
)
# The free-text task on the same reviews: a summary, judged by meaning (metric similarity).
SUMMARY = (
    "You help an online shop's product team. Summarise the customer's review in one short "
    "sentence of at most twelve words: what they think of the product and why."
)
TASKS = {"reviews": (SYSTEM, "exact"), "summaries": (SUMMARY, "similarity")}
PRODUCTS = (
    "blender", "running shoes", "phone case", "desk lamp", "backpack", "coffee grinder",
    "headphones", "yoga mat", "kettle", "office chair", "water bottle", "keyboard",
    "rain jacket", "frying pan", "bike light", "tent", "toaster", "webcam", "hair dryer",
    "board game", "vacuum cleaner", "wallet", "sunglasses", "garden hose", "mouse pad",
    "bookshelf", "pillow", "electric toothbrush", "suitcase", "watch strap",
)  # fmt: skip
GOOD = (
    "it works exactly as described", "the quality is excellent for the price",
    "shipping was fast", "it looks even better in person", "setup took two minutes",
    "my kids love it", "it feels really sturdy", "the battery lasts for days",
    "customer service was super helpful", "it is very comfortable", "it was a great gift",
    "I would buy it again without thinking", "it is so quiet", "the colour is gorgeous",
    "it fits perfectly",
)  # fmt: skip
BAD = (
    "it broke after a week", "the instructions were useless", "it arrived scratched",
    "it is much smaller than the photos suggest", "it stopped working on day three",
    "the smell is awful", "support never answered my emails", "it is way too loud",
    "the zipper fell off", "it feels cheap and flimsy", "it took a month to arrive",
    "the battery dies in an hour", "it does not fit at all", "I had to return it",
    "it overheats",
)  # fmt: skip
OPENERS = (
    "", "Bought this {p} last month. ", "My second {p}. ", "Ordered the {p} for my wife. ",
    "Review of the {p}: ", "Honest review. ", "Update after two weeks with the {p}. ", "Hmm. ",
)  # fmt: skip
AND = (" and ", ". Also ", ", plus ", ". ")
BUT = (" but ", ". However ", ", although ", ". On the other hand ")
ENDS = (".", "!", "", " :)", "...")

CONFIG = """\
[gateway]
host = "127.0.0.1"
port = {port}

[store]
url = "sqlite:///stillhouse.db"

[models.teacher]
provider = "openai-compatible"
base_url = "http://127.0.0.1:{teacher_port}/v1"
model = "qwen2.5-coder-0.5b-instruct"
price = {{ input_per_mtok = 0.40, output_per_mtok = 1.60 }}

[models.student]
provider = "local"
model = "smollm2-135m-instruct"
engine = "llama-cpp"

[tasks.{task}]
teacher = "teacher"
student = "student"
mode = "auto"

[tasks.{task}.grace]
min_conversations = 300
min_unique_intents = 50
max_days = 14

[tasks.{task}.gate]
agreement = 0.92
metric = "{metric}"
"""


def review(rng: random.Random) -> str:
    """One review: two good points, two bad ones, or one of each (the mix the label names)."""
    product = rng.choice(PRODUCTS)
    kind = rng.choice(("positive", "negative", "mixed"))
    if kind == "mixed":
        first, second = rng.choice(GOOD), rng.choice(BAD)
        if rng.random() < 0.5:
            first, second = second, first
        body = first + rng.choice(BUT) + second
    else:
        first, second = rng.sample(GOOD if kind == "positive" else BAD, 2)
        body = first + rng.choice(AND) + second
    opener = rng.choice(OPENERS).format(p=product)
    return opener + body[0].upper() + body[1:] + rng.choice(ENDS)


def traffic(
    port: int, n: int, seed: int, task: str = "reviews", concurrency: int = 4
) -> Counter[str]:
    """Send `n` reviews through the gateway with the openai SDK; the answers' counts."""
    from openai import OpenAI

    rng = random.Random(seed)
    client = OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=900
    )
    texts = [review(rng) for _ in range(n)]

    def one(i: int) -> str:
        reply = client.chat.completions.create(
            model=task,
            user=f"user-{i % 97}",
            messages=[
                {"role": "system", "content": TASKS[task][0]},
                {"role": "user", "content": texts[i]},
            ],
        )
        return (reply.choices[0].message.content or "").strip().lower()

    with cf.ThreadPoolExecutor(concurrency) as pool:
        return Counter(pool.map(one, range(n)))


def read(folder: Path) -> dict[str, Any]:
    """What the product recorded in the folder's store, read through the store's own API, and
    the config it ran under (the gate is in it)."""
    from stillhouse.answers import answer_text
    from stillhouse.config import load_config
    from stillhouse.lifecycle import events
    from stillhouse.store import open_store

    path = folder / "stillhouse.toml"
    config = load_config(path)
    (task,) = config.tasks
    with open_store(config.store.url) as store:
        moves = [
            {"at": _utc(e["since"]), "state": e["state"], "reason": e["reason"]}
            for e in reversed(events.history(store, task))
        ]
        datasets = [
            {"id": d.id, "train_count": d.train_count, "holdout_count": d.holdout_count,
             "intents_count": d.intents_count}
            for d in reversed(store.list_datasets(task))
        ]  # fmt: skip
        runs = [
            (run, c.backend)
            for c in store.list_candidates(task)
            for run in store.list_eval_runs(c.id)
        ]
        calls = store.list_calls(task, limit=1_000_000, role="teacher")
    evals = []
    for run, kind in sorted(runs, key=lambda r: r[0].created_at):
        m = run.metrics
        evals.append(
            {
                "eval": run.id,
                "candidate": m["candidate"],
                "kind": kind,
                "dataset": m["dataset"],
                "n": m["n"],
                "agreement": m["agreement"],
                "agreement_ci": m["agreement_ci"],
                "majority_baseline": m.get("majority_baseline"),
                "format_compliance": m.get("format_compliance"),
                "held_out_operating_point": (m.get("calibration") or {}).get("held_out"),
                "latency_ms": m.get("latency_ms"),
            }
        )
    answers = Counter(answer_text(c.response).strip().lower() for c in calls if c.response)
    return {
        "config": path.read_text(),
        "teacher_answers": dict(answers.most_common()),
        "moves": moves,
        "datasets": datasets,
        "evaluations": evals,
    }


def _utc(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    c = sub.add_parser("config", help="write the folder's stillhouse.toml")
    c.add_argument("--dir", type=Path, required=True)
    c.add_argument("--port", type=int, default=8400)
    c.add_argument("--teacher-port", type=int, default=8501)
    c.add_argument("--task", choices=sorted(TASKS), default="reviews")
    t = sub.add_parser("traffic", help="send reviews through the gateway")
    t.add_argument("--port", type=int, default=8400)
    t.add_argument("--n", type=int, default=400)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--task", choices=sorted(TASKS), default="reviews")
    r = sub.add_parser("read", help="collect the recorded figures as JSON")
    r.add_argument("--dir", type=Path, required=True)
    r.add_argument("--out", type=Path)
    r.add_argument("--note", default="", help="how the run was driven (traffic sent, restarts)")
    args = parser.parse_args()
    if args.step == "config":
        args.dir.mkdir(parents=True, exist_ok=True)
        path = args.dir / "stillhouse.toml"
        path.write_text(
            CONFIG.format(
                port=args.port,
                teacher_port=args.teacher_port,
                task=args.task,
                metric=TASKS[args.task][1],
            )
        )
        print(f"wrote {path}")
    elif args.step == "traffic":
        answers = traffic(args.port, args.n, args.seed, args.task)
        print(json.dumps(dict(answers.most_common(20))))
    else:
        doc = {
            "date": dt.date.today().isoformat(),
            "machine": {"platform": platform.platform(), "python": platform.python_version()},
            "note": args.note,
            **read(args.dir),
        }
        text = json.dumps(doc, indent=1)
        if args.out:
            args.out.write_text(text + "\n")
        print(text)


if __name__ == "__main__":
    main()

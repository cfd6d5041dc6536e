"""Holdout leak: how many retold cases straddle train and holdout, with and without groups.

Builds seeded synthetic support tickets, each told twice (the retelling changes two words) and
every fifth a third time with a greeting and a sign-off, splits them the old way (every row its
own group: `stratified_split`) and the new way (`group_rows` + `group_split` at
`group_similarity` 0.5), and reports for each the share of retold pairs on both sides, the
holdout's share and its highest similarity to training; then times grouping on ~5,000 rows.

    .venv/bin/python bench/holdout_leak.py [--cases 300] [--seed 0] [--out bench/results]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import random
import time
from pathlib import Path
from typing import Any

from stillhouse.curate.dedupe import similar_pairs, words
from stillhouse.curate.split import group_rows, group_split, holdout_similarity, stratified_split
from stillhouse.stats import percentile

NAMES = ["anna", "bo", "carla", "dev", "emil", "fatima", "greg", "hana", "ivan", "jun", "kofi"]
PRODUCTS = ["kettle", "laptop", "sofa", "bike", "lamp", "blender", "desk", "camera", "phone"]
PROBLEMS = ["broken", "late", "missing parts", "scratched", "the wrong colour", "dead", "wet"]
REMEDIES = ["a refund", "a replacement", "a repair", "store credit", "a call back", "my money"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
FILLER = ["really", "quite", "very", "just", "still", "also", "honestly", "again", "now"]
INTENTS = ["refund", "replacement", "repair", "delivery"]
TEMPLATES = [
    "hi my name is {name} and my order {order} for a {product} arrived {problem} on {day} "
    "so i would like {remedy} please",
    "order {order}: the {product} came {problem} last {day}, i am {filler} upset and want "
    "{remedy} as soon as possible",
    "hello, {name} here. the {product} from order {order} is {problem} since {day}. "
    "could you arrange {remedy} for me",
]


def ticket(rng: random.Random) -> str:
    return rng.choice(TEMPLATES).format(
        name=rng.choice(NAMES),
        order=rng.randrange(10_000, 99_999),
        product=rng.choice(PRODUCTS),
        problem=rng.choice(PROBLEMS),
        day=rng.choice(DAYS),
        remedy=rng.choice(REMEDIES),
        filler=rng.choice(FILLER),
    )


def retell(text: str, rng: random.Random) -> str:
    """The same ticket with two words changed."""
    parts = text.split()
    for at in rng.sample(range(len(parts)), 2):
        parts[at] = rng.choice(FILLER + DAYS + PRODUCTS)
    return " ".join(parts)


def dataset(cases: int, seed: int) -> tuple[list[str], list[str], list[tuple[int, int]]]:
    rng = random.Random(seed)
    texts: list[str] = []
    intents: list[str] = []
    pairs: list[tuple[int, int]] = []
    for case in range(cases):
        first = ticket(rng)
        told = [first, retell(first, rng)]
        if case % 5 == 0:
            told.append(f"good morning! {first} thank you so much")
        start = len(texts)
        texts += told
        intents += [rng.choice(INTENTS)] * len(told)
        pairs += [(start, start + k) for k in range(1, len(told))]
    return texts, intents, pairs


def measure(texts: list[str], intents: list[str], pairs: list[tuple[int, int]], **kw: Any) -> Any:
    keys = [f"row{i}" for i in range(len(texts))]
    out: dict[str, Any] = {}
    old = stratified_split(keys, intents, holdout=kw["holdout"], seed=kw["seed"])
    groups = group_rows(texts, [None] * len(texts), similarity=kw["similarity"])
    new = group_split(keys, intents, groups, holdout=kw["holdout"], seed=kw["seed"])
    for name, split in (("old", old), ("grouped", new)):
        leak = holdout_similarity(texts, split, similarity=kw["similarity"])
        out[name] = {
            "pairs_straddling": sum(split[a] != split[b] for a, b in pairs),
            "pairs_straddling_share": round(
                sum(split[a] != split[b] for a, b in pairs) / len(pairs), 4
            ),
            "holdout_share": round(split.count("holdout") / len(split), 4),
            "holdout_max_similarity_to_train": leak.max_similarity,
            "similarity_exact": leak.exact,
        }
    out["grouped"]["groups"] = len(set(groups))
    found, sims = similar_pairs([words(t) for t in texts], 0.0001, floor=0.0)
    by_pair = {tuple(p): s for p, s in zip(found.tolist(), sims.tolist(), strict=True)}
    told = sorted(by_pair.get(p, 0.0) for p in pairs)
    out["retold_pair_similarity"] = {
        "min": round(told[0], 3),
        "median": round(percentile(told, 50) or 0.0, 3),
        "below_threshold": sum(s < kw["similarity"] for s in told),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--timing-cases", type=int, default=2200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout", type=float, default=0.15)
    ap.add_argument("--similarity", type=float, default=0.5)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    kw = {"holdout": args.holdout, "seed": args.seed, "similarity": args.similarity}

    texts, intents, pairs = dataset(args.cases, args.seed)
    result: dict[str, Any] = {
        "bench": "holdout_leak",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "settings": {**kw, "cases": args.cases, "rows": len(texts), "retold_pairs": len(pairs)},
        **measure(texts, intents, pairs, **kw),
    }

    big, big_intents, _ = dataset(args.timing_cases, args.seed + 1)
    started = time.perf_counter()
    groups = group_rows(big, [None] * len(big), similarity=args.similarity)
    grouped = time.perf_counter()
    keys = [f"row{i}" for i in range(len(big))]
    split = group_split(keys, big_intents, groups, holdout=args.holdout, seed=args.seed)
    splitted = time.perf_counter()
    holdout_similarity(big, split, similarity=args.similarity)
    done = time.perf_counter()
    result["timing"] = {
        "rows": len(big),
        "group_rows_s": round(grouped - started, 3),
        "group_split_s": round(splitted - grouped, 3),
        "holdout_similarity_s": round(done - splitted, 3),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "holdout_leak.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

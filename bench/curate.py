"""Curation benchmark: 100,000 generated multi-turn conversations through the whole pipeline.

10% of them are planted near-duplicates (small edits of another conversation) and a fifth carry
planted PII. Reports each stage's time, dedupe precision/recall on the planted pairs, whether any
planted PII reached the export, peak memory, and datasketch's MinHashLSH on the same input.

    .venv/bin/python bench/curate.py [--n 100000] [--no-datasketch] [--out bench/results]
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

import orjson

from stillhouse.config import parse_config
from stillhouse.curate.dedupe import words
from stillhouse.curate.normalize import to_example
from stillhouse.curate.pipeline import curate_calls
from stillhouse.store import Call, open_store

INTENTS = [
    f"{verb} {thing}"
    for verb in ("cancel", "change", "check", "report", "order", "refund", "update", "close")
    for thing in ("card", "address", "subscription", "password", "loan", "transfer", "account")
]
SYSTEM = "You are the support assistant of Northwind Bank. Be brief, polite and accurate."


def luhn_card(rng: random.Random) -> str:
    digits = [4] + [rng.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        total += (d * 2 - 9 if d > 4 else d * 2) if i % 2 == 0 else d
    digits.append((10 - total % 10) % 10)
    s = "".join(map(str, digits))
    return " ".join(s[i : i + 4] for i in range(0, 16, 4))


def iban(rng: random.Random) -> str:
    bban = "".join(str(rng.randrange(10)) for _ in range(18))
    check = 98 - int("".join(str(int(c, 36)) for c in bban + "DE00")) % 97
    raw = f"DE{check:02d}{bban}"
    return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def plant_pii(rng: random.Random, i: int) -> tuple[str, str]:
    kind = i % 6
    if kind == 0:
        value = f"{rng.choice(['anna', 'li', 'omar', 'jo'])}.{i}@mail{rng.randrange(99)}.example"
    elif kind == 1:
        value = f"+44 20 {rng.randrange(1000, 9999)} {rng.randrange(1000, 9999)}"
    elif kind == 2:
        value = luhn_card(rng)
    elif kind == 3:
        value = iban(rng)
    elif kind == 4:
        value = f"{rng.randrange(100, 899)}-{rng.randrange(10, 99)}-{rng.randrange(1000, 9999)}"
    else:
        value = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    return value, f"for reference it is {value} if you need it"


def sentence(rng: random.Random, vocab: list[str], n: int) -> str:
    return " ".join(rng.choice(vocab) for _ in range(n))


def edit(rng: random.Random, text: str, vocab: list[str]) -> str:
    """A small edit: one word replaced (70%), else only case, punctuation and spacing."""
    ws = text.split()
    if rng.random() < 0.7:
        ws[rng.randrange(len(ws))] = rng.choice(vocab)
        return " ".join(ws)
    return "  ".join(ws).upper() + " ?!"


def jaccard(a: str, b: str, k: int = 3) -> float:
    def shingles(t: str) -> set[tuple[str, ...]]:
        ws = words(t)
        return {tuple(ws[i : i + k]) for i in range(max(1, len(ws) - k + 1))}

    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def generate(
    n: int, seed: int = 7
) -> tuple[list[Call], list[tuple[int, int]], list[tuple[str, str]]]:
    """(calls, planted duplicate pairs (original, copy), planted PII values)."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfgklmnprstvz" for v in "aeiou"]
    vocab = sorted({"".join(rng.choices(syllables, k=rng.choice((2, 3)))) for _ in range(20_000)})
    n_dups = n // 10
    n_bad = n // 50
    n_orig = n - n_dups - n_bad
    calls: list[Call] = []
    pii: list[tuple[str, str]] = []  # (call id, planted value)
    convs: list[list[dict[str, Any]]] = []
    answers: list[str] = []
    for i in range(n_orig):
        intent = INTENTS[i % len(INTENTS)]
        turns = rng.choice((1, 2, 3))
        msgs: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
        for t in range(turns):
            user = f"I want to {intent} {sentence(rng, vocab, rng.randrange(10, 22))}"
            if rng.random() < 0.3:  # ordinary numbers that are not PII
                user += f" order {rng.randrange(10_000, 99_999)} of {rng.randrange(1, 28)} May"
            if t == 0 and i % 5 == 0:
                value, line = plant_pii(rng, i)
                pii.append((f"call_{i:07d}", value))
                user = f"{user} {line}"
            msgs.append({"role": "user", "content": user})
            if t < turns - 1:
                msgs.append({"role": "assistant", "content": sentence(rng, vocab, 12)})
        convs.append(msgs)
        answers.append(f"To {intent}: {sentence(rng, vocab, rng.randrange(8, 20))}")
    pairs = []
    for d in range(n_dups):
        src = rng.randrange(n_orig)
        msgs = [dict(m) for m in convs[src]]
        target = rng.choice([k for k, m in enumerate(msgs) if m["role"] == "user"])
        msgs[target]["content"] = edit(rng, msgs[target]["content"], vocab)
        convs.append(msgs)
        answers.append(answers[src])
        pairs.append((src, n_orig + d))
    by_source: dict[str, list[str]] = {}
    for cid, value in pii:
        by_source.setdefault(cid, []).append(value)
    pii += [(f"call_{b:07d}", v) for a, b in pairs for v in by_source.get(f"call_{a:07d}", [])]
    order = list(range(len(convs)))
    for i in order:
        calls.append(
            Call(
                id=f"call_{i:07d}",
                task="bench",
                request={"model": "bench", "messages": convs[i]},
                response={
                    "choices": [
                        {
                            "message": {"role": "assistant", "content": answers[i]},
                            "finish_reason": "stop",
                        }
                    ]
                },
                created_at=1_700_000_000 + rng.random() * 1e6,
                finish_reason="stop",
            )
        )
    for b in range(n_bad):  # errors and truncations for the filters
        calls.append(
            Call(
                id=f"call_bad_{b:06d}",
                task="bench",
                request={"model": "bench", "messages": [{"role": "user", "content": "hi"}]},
                response=None if b % 2 else {"choices": [{"message": {"content": "cut"}}]},
                status="error" if b % 2 else "ok",
                finish_reason=None if b % 2 else "length",
                created_at=1_700_000_000.0,
            )
        )
    return calls, pairs, pii


def score_dedupe(
    kept_ids: set[str], pairs: list[tuple[int, int]], candidates: list[str]
) -> dict[str, Any]:
    """Recall: planted pairs not both kept (an original with two planted copies keeps one of
    three, so a found pair can lose both members). Precision: removed examples that belong to a
    planted pair."""
    planted = {f"call_{i:07d}" for p in pairs for i in p}
    found = sum(not (f"call_{a:07d}" in kept_ids and f"call_{b:07d}" in kept_ids) for a, b in pairs)
    removed = [c for c in candidates if c not in kept_ids]
    right = sum(c in planted for c in removed)
    return {
        "planted_pairs": len(pairs),
        "removed": len(removed),
        "recall": round(found / len(pairs), 4) if pairs else None,
        "precision": round(right / len(removed), 4) if removed else None,
    }


def datasketch_dedupe(
    texts: list[str], created: list[float], threshold: float, num_perm: int = 128
) -> tuple[set[int], float]:
    from datasketch import MinHash, MinHashLSH

    started = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    sigs = []
    for i, t in enumerate(texts):
        ws = words(t)
        shingles = {" ".join(ws[j : j + 3]).encode() for j in range(max(1, len(ws) - 2))}
        m = MinHash(num_perm=num_perm)
        m.update_batch(list(shingles))
        sigs.append(m)
        lsh.insert(i, m)
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, m in enumerate(sigs):
        for j in lsh.query(m):
            if j != i and m.jaccard(sigs[j]) >= threshold:
                parent[find(max(i, j))] = find(min(i, j))
    groups: dict[int, list[int]] = {}
    for i in range(len(texts)):
        groups.setdefault(find(i), []).append(i)
    kept = {max(g, key=lambda i: created[i]) for g in groups.values()}
    return kept, time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--no-datasketch", action="store_true")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()

    t0 = time.perf_counter()
    calls, pairs, pii = generate(args.n)
    gen_s = time.perf_counter() - t0
    print(
        f"generated {len(calls)} calls ({len(pairs)} planted near-duplicates, "
        f"{len(pii)} planted PII values) in {gen_s:.1f}s",
        file=sys.stderr,
    )
    config = parse_config(
        {
            "models": {"t": {"provider": "openai", "model": "x"}},
            "tasks": {"bench": {"teacher": "t"}},
        }
    )
    task = config.tasks["bench"]

    started = time.perf_counter()
    report = curate_calls("bench", task, calls)
    t_export = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        paths = {s: Path(tmp) / f"{s}.jsonl" for s in ("train", "holdout")}
        files = {s: p.open("wb") for s, p in paths.items()}
        for e in report.examples:
            files[e.split].write(orjson.dumps(e.example) + b"\n")
        for f in files.values():
            f.close()
        export_s = time.perf_counter() - t_export
        total_s = time.perf_counter() - started
        exported = b"".join(p.read_bytes() for p in paths.values()).decode().splitlines()
        # Each planted value is looked for in the exported line of every call that carried it
        # (the original and its planted copy): one substring search per value, not per file.
        line_of = {}
        for line, e in zip(
            exported, sorted(report.examples, key=lambda e: e.split != "train"), strict=True
        ):
            line_of[e.call_id] = line
        leaked = [v for cid, v in pii if v in line_of.get(cid, "")]
        lines_ok = all(json.loads(x)["messages"][-1]["role"] == "assistant" for x in exported)
        t_save = time.perf_counter()
        with open_store(f"sqlite:///{tmp}/bench.db") as store:
            store.insert_dataset(report.dataset, report.examples)
        save_s = time.perf_counter() - t_save
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    kept_ids = {e.call_id for e in report.examples}
    good_ids = [c.id for c in calls if not c.id.startswith("call_bad_")]
    ours = score_dedupe(kept_ids, pairs, good_ids)
    # The planted edits that stay at or above the threshold: the pairs dedupe promises to find.
    by_id = {c.id: c for c in calls}
    texts = {i: to_example(by_id[f"call_{i:07d}"]).dedupe_text() for p in pairs for i in p}
    similar = [p for p in pairs if jaccard(texts[p[0]], texts[p[1]]) >= 0.8]
    ours["planted_pairs_jaccard_ge_0.8"] = len(similar)
    ours["recall_jaccard_ge_0.8"] = score_dedupe(kept_ids, similar, good_ids)["recall"]
    ours["seconds"] = round(report.seconds["dedupe"], 2)

    result: dict[str, Any] = {
        "benchmark": "curate",
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "python": platform.python_version(),
        "calls": len(calls),
        "generate_s": round(gen_s, 2),
        "stages_s": {
            **{k: round(v, 2) for k, v in report.seconds.items()},
            "export": round(export_s, 2),
        },
        "total_s": round(total_s, 2),
        "save_sqlite_s": round(save_s, 2),
        "train": report.dataset.train_count,
        "holdout": report.dataset.holdout_count,
        "intents": report.dataset.intents_count,
        "intent_method": report.intent_method,
        "removed": report.dataset.removed,
        "dedupe": ours,
        "pii_planted": len(pii),
        "pii_leaked": len(leaked),
        "export_lines_ok": lines_ok,
        "peak_rss_mb": round(peak_mb),
    }
    if not args.no_datasketch:
        try:
            import datasketch  # noqa: F401
        except ImportError:
            result["datasketch"] = "not installed"
        else:
            from stillhouse.curate.pii import Scrubber

            scrub = Scrubber()
            good = [c for c in calls if not c.id.startswith("call_bad_")]
            texts = [scrub.example(to_example(c)).dedupe_text() for c in good]
            kept, seconds = datasketch_dedupe(texts, [c.created_at for c in good], 0.8)
            theirs = score_dedupe({good[i].id for i in kept}, pairs, [c.id for c in good])
            theirs["recall_jaccard_ge_0.8"] = score_dedupe(
                {good[i].id for i in kept}, similar, [c.id for c in good]
            )["recall"]
            theirs["seconds"] = round(seconds, 2)
            result["datasketch"] = theirs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"curate-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()

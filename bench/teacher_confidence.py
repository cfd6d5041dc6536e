"""The teacher's confidence as data: how sure the teacher was of each answer in a curated dataset
(its own token logprobs of the answer it gave, read teacher-forced on llama.cpp), and what that
says about the examples a student gets wrong.

    # each example's teacher confidence -> JSONL (train and holdout, in dataset order)
    python bench/teacher_confidence.py score --config /work/demo-full/stillhouse.toml \
        --task triage [--dataset ds_...] --out bench/results/teacher_confidence_triage.jsonl
    # joined with an eval run's answers (the student's agreement per held-out call)
    python bench/teacher_confidence.py read bench/results/teacher_confidence_triage.jsonl \
        --answers bench/results/deferral/triage_full_r2.jsonl [--json OUT]
    # a train split without its least confident share, and one without as many at random
    python bench/teacher_confidence.py split bench/results/teacher_confidence_triage.jsonl \
        --data .gpu/data --task triage --drop 0.1

The confidence of an answer is the minimum of its tokens' logprobs (the signal the fallback
routes on), the end-of-turn token excluded.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from deferral_learned import auroc, read_answers  # beside this script

from stillhouse.answers import token_confidence


def score(args: argparse.Namespace) -> None:
    import numpy as np

    from stillhouse.config import load_config
    from stillhouse.engine.gguf_files import model_gguf
    from stillhouse.engine.llamacpp import LlamaCppEngine, import_llama_cpp
    from stillhouse.store import open_store

    config = load_config(args.config)
    task = config.tasks[args.task]
    teacher = config.models[task.teacher]
    llama_cpp = import_llama_cpp()
    llm = llama_cpp.Llama(
        model_path=str(model_gguf(teacher.model)),
        n_ctx=2048,
        n_batch=512,
        logits_all=True,
        n_threads=args.threads,
        verbose=False,
    )
    engine = LlamaCppEngine(llm, name=teacher.model)  # its chat template, as serving renders
    with open_store(config.store.url) as store:
        dataset = args.dataset or store.list_datasets(task=args.task)[0].id
        examples = store.dataset_examples(dataset)
    out = args.out.open("w")
    for n, ex in enumerate(examples):
        messages = ex.example["messages"]
        prompt = engine.prompt_ids(messages[:-1])
        answer = str(messages[-1].get("content") or "")
        answer_ids = [int(t) for t in llm.tokenize(answer.encode(), add_bos=False, special=False)]
        full = prompt + answer_ids
        shared = 0
        for a, b in zip(llm.input_ids[: llm.n_tokens], prompt, strict=False):
            if a != b:
                break
            shared += 1
        llm.n_tokens = shared
        llm.eval(full[shared:])
        logprobs = []
        for j in range(len(prompt), len(full)):
            row = np.asarray(llm.scores[j - 1], dtype=np.float64)
            top = row.max()
            logprobs.append(float(row[full[j]] - top - np.log(np.exp(row - top).sum())))
        reduced = token_confidence(logprobs)
        line = {
            "position": ex.position,
            "split": ex.split,
            "call": ex.call_id,
            "intent": ex.intent,
            "min": reduced["min"],
            "mean": reduced["mean"],
            "token_logprobs": [round(lp, 4) for lp in logprobs],
        }
        out.write(json.dumps(line) + "\n")
        out.flush()
        if n % 50 == 0:
            print(f"{n}/{len(examples)}", file=sys.stderr)
    out.close()
    engine.close()


def read(args: argparse.Namespace) -> None:
    from stillhouse.evaluate.calibrate import kept_low

    teacher = {r["call"]: r for r in read_answers(args.confidence)}
    answers = [a for a in read_answers(args.answers) if a["call"] in teacher]
    pairs = sorted(
        ((teacher[a["call"]]["min"], a["agreement"]) for a in answers), key=lambda p: p[0]
    )
    agree = [a for _, a in pairs]
    conf = [c for c, _ in pairs]
    thirds = []
    for k in range(3):
        part = agree[k * len(agree) // 3 : (k + 1) * len(agree) // 3]
        cut = conf[k * len(conf) // 3 : (k + 1) * len(conf) // 3]
        thirds.append(
            {
                "teacher_min_from": cut[0],
                "teacher_min_to": cut[-1],
                "n": len(part),
                "student_agreement": sum(part) / len(part),
                "agreement_low": kept_low(sum(part), len(part)),
            }
        )
    train = [r["min"] for r in teacher.values() if r["split"] == "train"]
    doc = {
        "answers": str(args.answers),
        "held_out": len(answers),
        "auroc_teacher_confidence_vs_student_agreement": auroc(conf, agree),
        "by_teacher_confidence_third": thirds,
        "train_examples": len(train),
        "train_share_under": {
            str(t): sum(m < t for m in train) / len(train) for t in (-0.1, -0.5, -1.0, -2.0)
        },
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


def split_data(args: argparse.Namespace) -> None:
    """Write <task>_sure (the train split without its least confident `--drop`) and <task>_random
    (without as many drawn at random, seeded) beside <task> in --data, same holdout."""
    scored = [r for r in read_answers(args.confidence) if r["split"] == "train"]
    lines = (args.data / f"{args.task}.train.jsonl").read_text().splitlines()
    if len(lines) != len(scored):
        raise SystemExit(f"{len(lines)} train lines, {len(scored)} scored examples")
    n = round(len(lines) * args.drop)
    order = sorted(range(len(lines)), key=lambda i: scored[i]["min"])
    unsure = set(order[:n])
    drawn = set(random.Random(args.seed).sample(range(len(lines)), n))
    meta = json.loads((args.data / f"{args.task}.json").read_text())
    holdout = (args.data / f"{args.task}.holdout.jsonl").read_text()
    for name, dropped in ((f"{args.task}_sure", unsure), (f"{args.task}_random", drawn)):
        kept = [line for i, line in enumerate(lines) if i not in dropped]
        (args.data / f"{name}.train.jsonl").write_text("\n".join(kept) + "\n")
        (args.data / f"{name}.holdout.jsonl").write_text(holdout)
        (args.data / f"{name}.json").write_text(json.dumps({**meta, "task": name}))
        print(f"{name}: {len(kept)} train examples ({len(dropped)} dropped)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    sc = sub.add_parser("score")
    sc.add_argument("--config", type=Path, required=True)
    sc.add_argument("--task", required=True)
    sc.add_argument("--dataset", default=None)
    sc.add_argument("--threads", type=int, default=2)
    sc.add_argument("--out", type=Path, required=True)
    rd = sub.add_parser("read")
    rd.add_argument("confidence", type=Path)
    rd.add_argument("--answers", type=Path, required=True)
    rd.add_argument("--json", type=Path, default=None)
    sp = sub.add_parser("split")
    sp.add_argument("confidence", type=Path)
    sp.add_argument("--data", type=Path, required=True)
    sp.add_argument("--task", required=True)
    sp.add_argument("--drop", type=float, default=0.1)
    sp.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    {"score": score, "read": read, "split": split_data}[args.verb](args)


if __name__ == "__main__":
    main()

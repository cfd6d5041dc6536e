"""Training to a target: learning rate x LoRA rank x epochs, and agreement against data volume,
on curated datasets of several tasks, each adapter scored by the student's greedy agreement with
the teacher (the gate's measure), not by its loss.

Two steps:

    # a task's newest curated dataset (from a demo's folder or any stillhouse.toml) -> JSONL
    python bench/train_sweep.py export --config /work/demo-full/stillhouse.toml --task triage \
        --out .gpu/data
    # the sweep over every <task>.train.jsonl in the folder
    python bench/train_sweep.py run --data .gpu/data --model smollm2-135m-instruct \
        [--epochs 5] [--budget-s 420] [--json bench/results/train_sweep.json]

For each task the curated train split is split again as `stillhouse train` splits it
(train/validate.split): `--val` of it, by request, seeded, is the validation split the run is
judged on; the curated holdout (the gate's, held out by phrasing) is
scored too and never used to choose. After each epoch: validation loss, validation agreement,
holdout agreement. The summary compares, per setting, the epoch chosen by validation agreement
with the one chosen by validation loss (the loop's old rule) and the last epoch. Results are
written after each run, so a run stopped by `--budget-s` (or killed) keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stillhouse.train.config import TrainSettings
from stillhouse.train.validate import split

# The defaults first: a run stopped by its budget has measured what matters most.
GRID = [
    (2e-4, 16),
    (5e-4, 16),
    (1e-3, 16),
    (1e-4, 16),
    (2e-4, 8),
    (2e-4, 32),
    (5e-4, 8),
    (5e-4, 32),
    (1e-3, 8),
    (1e-3, 32),
    (1e-4, 8),
    (1e-4, 32),
]
FRACTIONS = [0.125, 0.25, 0.5]  # of the train split, for the data curve (1.0 is the grid's run)


def export(args: argparse.Namespace) -> None:
    from stillhouse.config import load_config
    from stillhouse.store import open_store

    config = load_config(args.config)
    task = config.tasks[args.task]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open_store(config.store.url) as store:
        newest = store.list_datasets(args.task)
        if args.dataset is None and not newest:
            sys.exit(f"task '{args.task}' has no curated dataset")
        dataset = args.dataset or newest[0].id
        for part in ("train", "holdout"):
            rows = [e.example for e in store.dataset_examples(dataset, part)]
            path = out / f"{args.task}.{part}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            print(f"{path}: {len(rows)} examples")
    meta = {"task": args.task, "dataset": dataset, "metric": task.gate.metric}
    (out / f"{args.task}.json").write_text(json.dumps(meta) + "\n")


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def one_run(
    task: str,
    metric: str,
    fit: list[dict[str, Any]],
    val: list[dict[str, Any]],
    holdout: list[dict[str, Any]],
    settings: TrainSettings,
    batch_size: int,
) -> dict[str, Any]:
    from stillhouse.train.lora import train
    from stillhouse.train.validate import Scorer

    val_scorer = Scorer(val, metric, batch_size=batch_size)  # type: ignore[arg-type]
    hold_scorer = Scorer(holdout, metric, batch_size=batch_size)  # type: ignore[arg-type]
    epochs: list[dict[str, Any]] = []

    def validate(model: Any, tokenizer: Any) -> float:
        v = val_scorer(model, tokenizer)
        h = hold_scorer(model, tokenizer)
        epochs.append({"val_agreement": round(v, 4), "holdout_agreement": round(h, 4)})
        return v

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = train(settings, fit, val, out, progress=False, validate=validate)
    losses = [h for h in result.history if "agreement" in h]
    for entry, h in zip(epochs, losses, strict=True):
        entry["step"] = int(h["step"])
        entry["val_loss"] = round(h["validation_loss"], 4)
    return {
        "task": task,
        "learning_rate": settings.learning_rate,
        "r": settings.r,
        "alpha": settings.alpha,
        "train_examples": len(fit),
        "val_examples": len(val),
        "holdout_examples": len(holdout),
        "initial_val_loss": result.initial_validation_loss,
        "epochs": epochs,
        "seconds": round(time.perf_counter() - started, 1),
        "device": result.device,
        "sample_answers": hold_scorer.last_answers[:3],  # the last epoch's, to eyeball
    }


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run: the holdout agreement of the epoch each rule picks (validation agreement, its
    ties broken by loss; validation loss; the last epoch)."""
    rows = []
    for run in runs:
        epochs = run["epochs"]
        if not epochs:
            continue
        by_agreement = max(
            range(len(epochs)), key=lambda i: (epochs[i]["val_agreement"], -epochs[i]["val_loss"])
        )
        by_loss = min(range(len(epochs)), key=lambda i: epochs[i]["val_loss"])
        rows.append(
            {
                "task": run["task"],
                "learning_rate": run["learning_rate"],
                "r": run["r"],
                "train_examples": run["train_examples"],
                "epoch_by_agreement": by_agreement + 1,
                "holdout_by_agreement": epochs[by_agreement]["holdout_agreement"],
                "epoch_by_loss": by_loss + 1,
                "holdout_by_loss": epochs[by_loss]["holdout_agreement"],
                "holdout_last": epochs[-1]["holdout_agreement"],
                "holdout_best": max(e["holdout_agreement"] for e in epochs),
            }
        )
    return rows


def run(args: argparse.Namespace) -> None:
    data = Path(args.data)
    tasks = args.tasks or sorted(p.name.split(".")[0] for p in data.glob("*.train.jsonl"))
    if not tasks:
        sys.exit(f"no <task>.train.jsonl under {data}")
    sets = {}
    for task in tasks:
        meta = json.loads((data / f"{task}.json").read_text())
        train_all = load(data / f"{task}.train.jsonl")[: args.limit]
        holdout = load(data / f"{task}.holdout.jsonl")[: args.limit]
        fit, val = split(train_all, args.val, args.seed)
        sets[task] = (meta["metric"], fit, val, holdout)

    started = time.perf_counter()
    doc: dict[str, Any] = {
        "bench": "train_sweep",
        "model": args.model,
        "epochs": args.epochs,
        "batch_size": args.batch,
        "precision": args.precision,
        "val_share": args.val,
        "seed": args.seed,
        "machine": platform.node(),
        "tasks": {
            t: {"metric": m, "train": len(f), "val": len(v), "holdout": len(h)}
            for t, (m, f, v, h) in sets.items()
        },
        "runs": [],
    }
    plan = [(lr, r, 1.0) for lr, r in GRID[: args.grid]]
    plan += [(args.curve_lr, args.curve_r, frac) for frac in args.fractions if args.curve]
    for lr, r, frac in plan:
        for task, (metric, fit, val, holdout) in sets.items():
            if time.perf_counter() - started > args.budget_s:
                doc["stopped_by_budget"] = True
                break
            part = fit[: max(8, round(frac * len(fit)))]
            settings = TrainSettings(
                base_model=args.model,
                learning_rate=lr,
                r=r,
                alpha=2 * r,
                epochs=args.epochs,
                patience=args.epochs + 1,  # never stop early: every epoch is measured
                batch_size=args.batch,
                precision=args.precision,
                device=args.device,
                seed=args.seed,
                eval_every=10**9 if args.final_only else None,  # None: each epoch
            )
            result = one_run(task, metric, part, val, holdout, settings, args.gen_batch)
            result["fraction"] = frac
            doc["runs"].append(result)
            doc["summary"] = summarize(doc["runs"])
            doc["seconds"] = round(time.perf_counter() - started, 1)
            print(json.dumps(doc["summary"][-1]), flush=True)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(doc, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="a task's curated dataset -> JSONL")
    ex.add_argument("--config", required=True, help="the stillhouse.toml whose store to read")
    ex.add_argument("--task", required=True)
    ex.add_argument("--dataset", default=None, help="default: the task's newest")
    ex.add_argument("--out", required=True)
    go = sub.add_parser("run", help="the sweep")
    go.add_argument("--data", required=True)
    go.add_argument("--model", default="smollm2-135m-instruct")
    go.add_argument("--epochs", type=int, default=5)
    go.add_argument("--batch", type=int, default=8)
    go.add_argument("--gen-batch", type=int, default=64, help="answers generated at once")
    go.add_argument("--precision", default="float32", help="float32: as a CPU trains")
    go.add_argument("--device", default="auto")
    go.add_argument("--val", type=float, default=0.15, help="share of train for validation")
    go.add_argument("--seed", type=int, default=0)
    go.add_argument("--grid", type=int, default=len(GRID), help="first N settings of the grid")
    go.add_argument("--curve", action=argparse.BooleanOptionalAction, default=True)
    go.add_argument("--curve-lr", type=float, default=1e-3, help="the data curve's settings")
    go.add_argument("--curve-r", type=int, default=16)
    go.add_argument("--fractions", nargs="+", type=float, default=FRACTIONS)
    go.add_argument("--final-only", action="store_true", help="score the last epoch only")
    go.add_argument("--tasks", nargs="+", default=None, help="default: every task in --data")
    go.add_argument("--limit", type=int, default=None, help="first N examples (a smoke test)")
    go.add_argument("--budget-s", type=float, default=float("inf"))
    go.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    export(args) if args.command == "export" else run(args)


if __name__ == "__main__":
    main()

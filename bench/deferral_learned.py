"""Does a learned deferral rule beat one token signal? Gupta et al. (ICLR 2024, "Language model
cascades: token-level uncertainty and beyond") found quantiles of the per-token logprobs better than
their mean, and a small model over several quantiles better still. This measures, on eval runs'
answers (answers.jsonl with `token_logprobs`, written by `stillhouse eval`), out of sample:

- each fixed signal (min, p10, mean of the token logprobs), threshold chosen in-fold;
- `quantiles`: a logistic regression over the token-logprob quantiles (0, 5, 10, 25, 50th) and the
  answer's length in tokens, fitted in-fold, thresholded in-fold;
- `quantiles+intent` and `min+intent`: the same with one intercept per intent (L2-shrunk to the
  common one) -- a single threshold on such a score is a per-intent threshold on the signal.

Every method is judged the way the gate judges the product's calibration (evaluate.calibrate):
2-fold cross-fit, the threshold the least teacher traffic whose kept answers' lower bound reaches
the target on the fitting fold, pooled over the folds; repeated over `--seeds` fold splits (one
split of 56 examples is noise). Also the pooled held-out AUROC (right vs wrong answers).

    .venv/bin/python bench/deferral_learned.py RUN/evals/*/answers.jsonl [--target 0.95]
        [--seeds 20] [--out bench/results/deferral_learned.json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stillhouse.answers import token_confidence
from stillhouse.evaluate.calibrate import (
    FOLDS,
    RIDGE,
    Point,
    apply,
    calibrate,
    choose,
    curve,
    fit_logistic,
    pooled,
)
from stillhouse.evaluate.calibrate import cross_fit as chosen_cross_fit
from stillhouse.stats import percentile

LEVELS = (0, 5, 10, 25, 50)


def quantile_features(logprobs: Sequence[float]) -> list[float]:
    values = list(logprobs) or [0.0]
    return [float(percentile(values, q) or 0.0) for q in LEVELS] + [float(np.log1p(len(values)))]


Scorer = Callable[[list[int], list[int]], tuple[list[float], list[float]]]


def fixed(values: Sequence[float]) -> Scorer:
    return lambda fit, test: ([values[i] for i in fit], [values[i] for i in test])


def learned(rows: Sequence[dict[str, Any]], agree: Sequence[float], features: str, intents: bool):
    def base(r: dict[str, Any]) -> list[float]:
        lps = r["token_logprobs"]
        return quantile_features(lps) if features == "quantiles" else [min(lps or [0.0])]

    table = np.array([base(r) for r in rows], dtype=float)
    names = sorted({str(r.get("intent")) for r in rows})

    def design(index: list[int], mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        x = (table[index] - mean) / std
        if intents:
            onehot = np.array([[str(rows[i].get("intent")) == n for n in names] for i in index])
            x = np.hstack([x, onehot.astype(float)])
        return x

    def score(fit: list[int], test: list[int]) -> tuple[list[float], list[float]]:
        mean, std = table[fit].mean(0), table[fit].std(0) + 1e-6
        y = np.array([agree[i] for i in fit])
        w = fit_logistic(design(fit, mean, std), y)

        def s(index: list[int]) -> list[float]:
            x = np.hstack([design(index, mean, std), np.ones((len(index), 1))])
            # row by row: BLAS's matrix product may round two equal rows differently, and a tie
            # split in two moves a threshold
            return [float(v) for v in (x * w).sum(axis=1)]

        return s(fit), s(test)

    return score


def auroc(scores: Sequence[float], agree: Sequence[float]) -> float | None:
    pos = [s for s, a in zip(scores, agree, strict=True) if a >= 0.5]
    neg = [s for s, a in zip(scores, agree, strict=True) if a < 0.5]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def read_answers(path: Path) -> list[dict[str, Any]]:
    """An eval run's answers.jsonl (or any JSONL), one dict a line."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def row(point: Point, auroc: float | None = None) -> dict[str, Any]:
    return {
        "student_share": 1 - point.teacher_share,
        "kept_agreement": point.kept_agreement,
        "kept_low": point.kept_low,
        "auroc": auroc,
    }


def cross_fit(score: Scorer, agree: Sequence[float], target: float, seed: int) -> dict[str, Any]:
    """calibrate.pooled with a threshold on `score`'s values chosen on each fitting fold; the
    held-out scores pooled for the AUROC."""
    scores: list[float] = [0.0] * len(agree)

    def judge(fit: list[int], test: list[int]) -> Point:
        fit_scores, test_scores = score(fit, test)
        point, _ = choose(curve(fit_scores, [agree[i] for i in fit]), target)
        for i, s in zip(test, test_scores, strict=True):
            scores[i] = s
        return apply(point.threshold, test_scores, [agree[i] for i in test])

    point = pooled(len(agree), seed, judge)
    return row(point, auroc(scores, agree))


def summarise(results: list[dict[str, Any]], target: float) -> dict[str, Any]:
    def avg(key: str) -> float | None:
        got = [r[key] for r in results if r[key] is not None]
        return round(sum(got) / len(got), 4) if got else None

    return {
        "student_share": avg("student_share"),
        "kept_agreement": avg("kept_agreement"),
        "kept_low": avg("kept_low"),
        "auroc": avg("auroc"),
        "reached": sum(r["kept_low"] >= target for r in results),
        "splits": len(results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("answers", type=Path, nargs="+")
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs = []
    for path in args.answers:
        rows = [r for r in read_answers(path) if r.get("token_logprobs")]
        agree = [float(r["agreement"]) for r in rows]
        reduced = [token_confidence(r["token_logprobs"]) for r in rows]
        signals = {s: [float(c[s] or 0.0) for c in reduced] for s in ("min", "p10", "mean")}
        methods: dict[str, Scorer] = {
            **{name: fixed(values) for name, values in signals.items()},
            "quantiles": learned(rows, agree, "quantiles", intents=False),
            "quantiles+intent": learned(rows, agree, "quantiles", intents=True),
            "min+intent": learned(rows, agree, "min", intents=True),
            "min-learned": learned(rows, agree, "min", intents=False),
        }
        # the signal picked in each fold (what calibrate did until this bench)
        picked = [row(chosen_cross_fit(signals, agree, args.target, s)) for s in range(args.seeds)]
        product, chose = [], []
        intents = [r.get("intent") for r in rows]
        for seed in range(args.seeds):  # what `stillhouse eval` does: min, per intent if better
            done = calibrate({"min": signals["min"]}, agree, args.target, seed, intents=intents)
            assert done.held_out is not None
            chose.append(done.intent_thresholds is not None)
            product.append(row(done.held_out))
        results = {
            "picked (calibrate)": summarise(picked, args.target),
            "min, per intent if better": {
                **summarise(product, args.target),
                "per_intent": any(chose),
            },
        }
        results |= {
            name: summarise(
                [cross_fit(score, agree, args.target, seed) for seed in range(args.seeds)],
                args.target,
            )
            for name, score in methods.items()
        }
        runs.append(
            {
                "answers": str(path),
                "n": len(rows),
                "intents": len({r.get("intent") for r in rows}),
                "agreement": round(sum(agree) / len(agree), 4),
                "target": args.target,
                "methods": results,
            }
        )
        print(f"{path}  n={len(rows)}  agreement={sum(agree) / len(agree):.3f}")
        for name, r in results.items():
            print(
                f"  {name:<17} student {r['student_share']:.3f}  kept {r['kept_agreement']}  "
                f"low {r['kept_low']}  auroc {r['auroc']}  reached {r['reached']}/{r['splits']}"
            )
    doc = {"levels": LEVELS, "l2": RIDGE, "folds": FOLDS, "runs": runs}
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()

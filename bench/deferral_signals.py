"""Which confidence signal defers best: each signal's out-of-sample operating point on an eval
run's answers (answers.jsonl, which keeps min, p10 and mean per answer), and the choice made
across signals inside each fold (what the calibration does).

    .venv/bin/python bench/deferral_signals.py RUN/evals/eval_x/answers.jsonl [--target 0.95]
        [--out bench/results/deferral_signals.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stillhouse.answers import SIGNALS
from stillhouse.evaluate.calibrate import calibrate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("answers", type=Path, nargs="+")
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs = []
    for path in args.answers:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        agree = [float(r["agreement"]) for r in rows]
        signals = {s: [(r["confidence"] or {}).get(s) for r in rows] for s in SIGNALS}
        per_signal = {}
        for name, confidences in signals.items():
            held = calibrate(confidences, agree, args.target).held_out
            per_signal[name] = held.to_json() if held else None
        chosen = calibrate(signals, agree, args.target)
        runs.append(
            {
                "answers": str(path),
                "n": len(rows),
                "agreement": sum(agree) / len(agree),
                "target": args.target,
                "per_signal_held_out": per_signal,
                "chosen": chosen.signal,
                "chosen_held_out": chosen.held_out.to_json() if chosen.held_out else None,
            }
        )
    doc = {"runs": runs}
    text = json.dumps(doc, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""Run `stillhouse demo` and keep its figures: the raw `demo --json` document, the wall time, peak
RSS, the machine and the commit, in bench/results/demo_<profile>.json (another task than triage:
demo_<task>_<profile>.json).

    .venv/bin/python bench/demo.py                   # --fast (8 intents)
    .venv/bin/python bench/demo.py --full            # the full run (22 intents)
    .venv/bin/python bench/demo.py --task extract    # the field-extraction task, --fast

It runs `python -m stillhouse` with this interpreter and this checkout first on PYTHONPATH, so
the code measured is the checkout's, whatever is installed in the environment.

The gate the demo ran under is in the document (`gate`: each threshold and its source), as are
the prices (`prices`); docs/benchmarks.md and docs/quickstart.md quote these files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the full run, not --fast")
    parser.add_argument("--task", default="triage", help="the demo's task: triage or extract")
    parser.add_argument("--out", type=Path, help="default: bench/results/demo_<profile>.json")
    parser.add_argument(
        "--keep", type=Path, help="run in this folder and keep it (its store, runs and evals)"
    )
    parser.add_argument("--engine", choices=["auto", "torch", "llama-cpp"], default="auto")
    args = parser.parse_args()
    profile = "full" if args.full else "fast"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = bool(
        subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    with tempfile.TemporaryDirectory(prefix="stillhouse-demo-") as tmp:
        folder = args.keep.resolve() if args.keep else Path(tmp) / "demo"
        command = [sys.executable, "-m", "stillhouse", "demo", "--json", "--task", args.task]
        if not args.full:
            command.insert(4, "--fast")
        command += ["--engine", args.engine, "--dir", str(folder)]
        started = time.time()
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
        wall = time.time() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"the demo failed (exit {done.returncode})")
    doc = json.loads(done.stdout)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = {
        "profile": profile,
        "task": args.task,
        "command": " ".join(["python", *command[1:-2]]),
        "commit": commit + ("+dirty" if dirty else ""),
        "date": time.strftime("%Y-%m-%d", time.gmtime(started)),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_kb / 1024),
        "demo": doc,
    }
    name = profile if args.task == "triage" else f"{args.task}_{profile}"
    path = args.out or RESULTS / f"demo_{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    keys = (
        "outcome",
        "holdout_agreement",
        "holdout_agreement_ci",
        "kept_agreement",
        "agreement",
        "agreement_ci",
        "student_share",
        "fallback_rate",
        "errors",
        "cost_per_call_before",
        "cost_per_call_after",
        "p95_latency_ms_before",
        "p95_latency_ms_after",
    )
    print(json.dumps({"wall_s": out["wall_s"], **{k: doc.get(k) for k in keys}}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

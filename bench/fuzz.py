"""Long run of the bad-input tests: thousands of generated requests instead of the suite's few
hundred, with hypothesis's own count of the examples each test ran.

    .venv/bin/python bench/fuzz.py                 # 2,000 examples a test
    .venv/bin/python bench/fuzz.py --examples 500

It runs tests/test_bad_input.py's generated tests (the parser properties, raw bytes at the
gateway, metadata the gateway acts on and bodies nested up to 1,100 deep, and schemathesis
against the gateway's /openapi.json) with STILLHOUSE_FUZZ_EXAMPLES set,
and writes bench/results/fuzz-<time>.json: per test, passing/failing/invalid examples and the
outcome. Any failure is a defect: the test prints the failing request.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
GENERATED = (
    "any_bytes or any_json or well_formed or bad_bytes or generated_requests"
    " or metadata_and_nesting"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000)
    args = parser.parse_args()
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/test_bad_input.py",
            "-k",
            GENERATED,
            "-q",
            "-p",
            "no:cacheprovider",
            "--hypothesis-show-statistics",
        ],
        cwd=ROOT,
        env={**os.environ, "STILLHOUSE_FUZZ_EXAMPLES": str(args.examples)},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    # "--hypothesis-show-statistics": one block per test (schemathesis: one per operation),
    # a line "N passing, M failing, and K invalid test cases" per phase.
    tests: dict[str, dict[str, int]] = {}
    current = None
    for line in proc.stdout.splitlines():
        m = re.match(r"tests/test_bad_input\.py::(\S+):$", line.strip())
        if m:
            n = sum(1 for k in tests if k.split("#")[0] == m.group(1)) + 1
            current = f"{m.group(1)}#{n}"
            tests[current] = {"passing": 0, "failing": 0, "invalid": 0}
            continue
        m = re.search(r"(\d+) passing, (\d+) failing, and (\d+) invalid", line)
        if m and current:
            for key, value in zip(("passing", "failing", "invalid"), m.groups(), strict=True):
                tests[current][key] += int(value)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    doc = {
        "examples_per_test": args.examples,
        "seconds": round(seconds, 1),
        "exit_code": proc.returncode,
        "pytest": summary,
        "tests": tests,
        "total_passing_examples": sum(t["passing"] for t in tests.values()),
        "total_failing_examples": sum(t["failing"] for t in tests.values()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"fuzz-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(doc, indent=1))
    for name, t in tests.items():
        print(f"{name}: {t['passing']} passing, {t['failing']} failing, {t['invalid']} invalid")
    print(f"{summary}  ({seconds:.0f} s)  raw results: {out}")
    if proc.returncode:
        print(proc.stdout[-5000:])
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())

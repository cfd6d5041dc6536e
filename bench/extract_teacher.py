"""How well the demo's teacher extracts: its answers in a kept `demo --task extract` folder against
the answers a perfect extractor gives (the generator's, found again by the message's text), whole
and field by field, present fields copied and absent fields left null.

    .venv/bin/python bench/extract_teacher.py /work/demo-extract   # after bench/demo.py --keep

Run it after the demo has finished, with the same checkout (it opens the demo's store).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from stillhouse.answers import agree, answer_text, schema_errors
from stillhouse.config import load_config
from stillhouse.demo import extract
from stillhouse.demo.tasks import EXTRACT
from stillhouse.stats import binomial_interval
from stillhouse.store import open_store

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a kept demo folder of --task extract")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/extract_teacher.json")
    args = parser.parse_args()
    config = load_config(args.folder / "stillhouse.toml")
    examples = EXTRACT.examples(0)  # the demo's users' seed
    perfect: dict[str, str] = {}
    for _ in range(5000):
        e = examples.next()
        perfect.setdefault(e.messages[-1]["content"], e.answer)
    with open_store(config.store.url) as store:
        calls = [
            c
            for c in store.calls_for_task(EXTRACT.name)
            if c.role == "teacher" and c.status == "ok" and c.route_reason == "grace"
        ]
    whole = valid = n = 0
    present, present_ok, absent, absent_ok = Counter(), Counter(), Counter(), Counter()
    for call in calls:
        want = perfect.get(call.request["messages"][-1]["content"])
        if want is None:
            continue
        got = answer_text(call.response)
        n += 1
        whole += agree("json", want, got)
        valid += schema_errors(got, extract.schema()) is None
        try:
            answer = json.loads(got)
        except ValueError:
            answer = {}
        for key, value in json.loads(want).items():
            same = isinstance(answer, dict) and agree(
                "json", json.dumps({key: value}), json.dumps({key: answer.get(key)})
            )
            (absent if value is None else present)[key] += 1
            (absent_ok if value is None else present_ok)[key] += same
    doc = {
        "folder": str(args.folder),
        "teacher_calls": n,
        "all_fields_right": whole,
        "all_fields_right_rate": round(whole / n, 4) if n else None,
        "all_fields_right_ci": [round(x, 4) for x in binomial_interval(whole, n)],
        "schema_valid": valid,
        "present_copied": {k: [present_ok[k], present[k]] for k in extract.FIELDS},
        "absent_left_null": {k: [absent_ok[k], absent[k]] for k in extract.FIELDS},
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()

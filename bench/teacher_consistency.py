"""How consistent a task's teacher is over retellings, and whether its own confidence tells its
inconsistent answers: from a store's captured teacher calls (not shadows; those that break the
task's schema left out, as curation leaves them out), grouped the way curation groups retold
cases (`curate.split.group_rows` at `curate.group_similarity`).

For each confidence signal the teacher reported (`stillhouse.confidence`, a local teacher
always does), the consistency of the most confident 100/80/60% of its grouped answers.

    .venv/bin/python bench/teacher_consistency.py --config DEMO/stillhouse.toml --task triage \\
        [--out bench/results/teacher_consistency_demo_full.json]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from stillhouse.answers import (
    SIGNALS,
    answer_text,
    breaks_schema,
    canonical,
    confidence_of,
    first_message,
)
from stillhouse.config import load_config
from stillhouse.curate.normalize import request_messages, user_text
from stillhouse.curate.split import group_rows, teacher_consistency
from stillhouse.store import open_store

SHARES = (1.0, 0.8, 0.6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    config = load_config(args.config)
    task = config.tasks[args.task]
    with open_store(config.store.url) as store:
        calls = [
            c
            for c in store.calls_for_task(args.task)
            if c.role == "teacher"
            and c.status == "ok"
            and c.route_reason != "shadow"
            # the answers curation keeps: one that breaks the task's schema is not imitated
            and not breaks_schema(first_message(c.response), task.response_schema)
        ]
    texts = [user_text(request_messages(c.request)) for c in calls]
    answers = [canonical(task.gate.metric, answer_text(c.response)) for c in calls]
    groups = group_rows(texts, [None] * len(calls), similarity=task.curate.group_similarity)
    overall = teacher_consistency(groups, answers)
    sizes = Counter(groups)
    counts: dict[int, Counter[str]] = {}
    for g, a in zip(groups, answers, strict=True):
        counts.setdefault(g, Counter())[a] += 1
    majority = {g: c.most_common(1)[0][0] for g, c in counts.items()}
    grouped = [i for i, g in enumerate(groups) if sizes[g] > 1]
    by_signal = {}
    for signal in SIGNALS:
        scored = [
            (
                (confidence_of(calls[i].response) or {}).get(signal),
                answers[i] == majority[groups[i]],
            )
            for i in grouped
        ]
        known = sorted(((c, ok) for c, ok in scored if c is not None), reverse=True)
        by_signal[signal] = {
            f"top_{round(share * 100)}%": (
                sum(ok for _, ok in known[: int(len(known) * share)])
                / max(1, int(len(known) * share))
            )
            for share in SHARES
        }
    doc = {
        "task": args.task,
        "teacher": task.teacher,
        "teacher_calls": len(calls),
        "group_similarity": task.curate.group_similarity,
        "consistency": overall.to_json(),
        "consistency_of_the_most_confident": by_signal,
    }
    text = json.dumps(doc, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""What token-level distillation between the packaged teacher and student would face: how the two
tokenizers split the teacher's answers. A KD loss needs, at each student token, the teacher's
distribution over the same next piece of text; that is exact only where both tokenizers cut the
answer at the same places.

    python bench/token_map.py .gpu/data [--json bench/results/token_map.json]

For each <task>.train.jsonl under the folder: the share of answers both tokenizers split
identically, and the share of student tokens whose span (start and end in the text) is also one
teacher token's.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

TEACHER, STUDENT = "qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"


def pieces(model: Any, text: str) -> list[str]:
    ids = model.tokenize(text.encode(), add_bos=False, special=False)
    return [model.detokenize([i]).decode("utf-8", "replace") for i in ids]


def spans(tokens: list[str]) -> set[tuple[int, int]]:
    ends = list(itertools.accumulate(len(t) for t in tokens))
    return set(zip([0, *ends[:-1]], ends, strict=True))


def main() -> None:
    from llama_cpp import Llama

    from stillhouse.engine.gguf_files import model_gguf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    teacher = Llama(str(model_gguf(TEACHER)), vocab_only=True, verbose=False)
    student = Llama(str(model_gguf(STUDENT)), vocab_only=True, verbose=False)
    doc: dict[str, Any] = {"teacher": TEACHER, "student": STUDENT, "tasks": {}}
    for path in sorted(args.data.glob("*.train.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        identical = shared = total = 0
        for row in rows:
            answer = str(row["messages"][-1].get("content") or "")
            t, s = pieces(teacher, answer), pieces(student, answer)
            identical += t == s
            shared += len(spans(s) & spans(t))
            total += len(s)
        example = str(rows[0]["messages"][-1].get("content") or "")
        doc["tasks"][path.name.split(".")[0]] = {
            "answers": len(rows),
            "identical_split": identical / len(rows),
            "student_tokens_with_a_teacher_token_of_the_same_span": shared / total,
            "example": {"teacher": pieces(teacher, example), "student": pieces(student, example)},
        }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()

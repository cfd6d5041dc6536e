"""Prompt optimisation, the cheap first candidate: the student base model with a system prompt
distilled from the teacher's conventions and few-shot examples chosen from teacher traces (one per
intent, most frequent intents first). No weights change; it is judged by the same gate.

Pure functions over examples, plus `optimize_task`, which registers the prompt as a candidate
(backend "prompt") whose `artifacts.prompt` the evaluation applies to every request.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .config import Config
from .errors import ConfigError, StillhouseError
from .store.base import TraceStore
from .store.records import Candidate

DEFAULT_SHOTS = 8
MAX_LISTED_VALUES = 30  # a field with more distinct values is free text, not a label set


def _answer(example: dict[str, Any]) -> str | None:
    for m in reversed(example["messages"]):
        if m["role"] == "assistant" and isinstance(m.get("content"), str):
            return str(m["content"])
    return None


def _system(example: dict[str, Any]) -> str | None:
    first = example["messages"][0]
    return str(first["content"]) if first["role"] == "system" else None


def distill_system_prompt(examples: Sequence[dict[str, Any]]) -> str:
    """What the teacher's answers have in common, said as instructions: JSON with these keys and
    these label values when every answer is a JSON object, else a length bound; the traffic's
    own most common system prompt comes first."""
    answers = [a for e in examples if (a := _answer(e)) is not None]
    lines: list[str] = []
    systems = Counter(s for e in examples if (s := _system(e)) is not None)
    if systems:
        lines.append(systems.most_common(1)[0][0])
    objects = []
    for a in answers:
        try:
            value = json.loads(a)
        except ValueError:
            break
        if not isinstance(value, dict):
            break
        objects.append(value)
    if answers and len(objects) == len(answers):
        keys = list(dict.fromkeys(k for o in objects for k in o))
        lines.append(
            "Answer with one JSON object and nothing else, with the keys: " + ", ".join(keys) + "."
        )
        for key in keys:
            values = {json.dumps(o[key]) for o in objects if key in o}
            if len(values) <= MAX_LISTED_VALUES and all(
                isinstance(o.get(key), str) for o in objects if key in o
            ):
                listed = ", ".join(sorted(json.loads(v) for v in values))
                lines.append(f'"{key}" is one of: {listed}.')
    elif answers:
        words = sorted(len(a.split()) for a in answers)
        lines.append(f"Answer briefly, in at most {words[int(0.9 * (len(words) - 1))]} words.")
    return "\n".join(lines)


def choose_examples(
    examples: Sequence[dict[str, Any]], intents: Sequence[str], shots: int = DEFAULT_SHOTS
) -> list[dict[str, Any]]:
    """Up to `shots` single-turn examples, one per intent, most frequent intents first (ties by
    name), each the intent's first example: deterministic for the same dataset."""
    first: dict[str, dict[str, Any]] = {}
    for example, intent in zip(examples, intents, strict=True):
        turns = [m for m in example["messages"] if m["role"] != "system"]
        if len(turns) == 2 and intent not in first:
            first[intent] = {"messages": turns}
    counts = Counter(intents)
    ordered = sorted(first, key=lambda i: (-counts[i], i))
    return [first[i] for i in ordered[:shots]]


def optimize_task(
    store: TraceStore,
    config: Config,
    task: str,
    *,
    dataset: str | None = None,
    shots: int | None = None,
) -> tuple[Candidate, dict[str, Any]]:
    """Build the prompt from the dataset's training split (`shots` examples, default the task's
    optimize.shots) and register it as a candidate of backend "prompt" on the task's student
    model: (candidate, the `optimize --json` document)."""
    from .curate import snapshot
    from .registry import register_candidate

    settings = config.task(task)
    if settings.student is None:
        raise ConfigError(f"tasks.{task}.student: a prompt needs a student model to run on")
    if shots is None:
        shots = settings.optimize.shots
    if dataset is None:
        found = store.list_datasets(task)
        if not found:
            raise StillhouseError(f"task '{task}' has no dataset yet: run `stillhouse curate`")
        dataset = max(found, key=lambda d: d.created_at).id
    ds = snapshot.load(store, dataset)
    rows = store.dataset_examples(ds.id, "train")
    if not rows:
        raise StillhouseError(f"dataset {ds.id} has no training examples")
    examples = [r.example for r in rows]
    prompt = {
        "system": distill_system_prompt(examples),
        "examples": choose_examples(examples, [r.intent for r in rows], shots),
    }
    # the gateway applies the prompt to every request it routes to this candidate
    serving = {**config.models[settings.student].serving_table(), "prompt": prompt}
    candidate = register_candidate(
        store,
        task=task,
        dataset_id=ds.id,
        backend="prompt",
        base_model=serving["model"],
        config={"shots": shots, "selection": "per_intent"},
        artifacts={"prompt": prompt},
        serving=serving,
        metrics={},
    )
    doc = {
        "candidate": candidate.id,
        "task": task,
        "dataset": ds.id,
        "backend": "prompt",
        "base_model": candidate.base_model,
        "prompt": prompt,
    }
    return candidate, doc

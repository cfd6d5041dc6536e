"""The curation pipeline: filters -> normalise -> PII -> dedupe -> intents -> caps -> split.

`curate_calls` is pure (calls in, snapshot out) and times each stage; `curate` reads a task's
calls from the store and saves the snapshot. A call is never in a dataset unless it passed every
filter, and no text reaches a snapshot before it was scrubbed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..config import Config, TaskConfig
from ..errors import ConfigError
from ..store.base import TraceStore
from ..store.records import Call, Dataset, DatasetExample, Score
from . import intent_model, snapshot
from .dedupe import dedupe
from .filters import apply_filters, describe
from .intents import assign_intents
from .normalize import to_example
from .pii import Scrubber
from .split import cap_per_intent, stratified_split

STAGES = ("filters", "normalize", "pii", "dedupe", "intents", "split")


@dataclass(frozen=True, slots=True)
class CurateReport:
    dataset: Dataset
    examples: tuple[DatasetExample, ...]
    seconds: dict[str, float]  # per stage
    intent_method: str
    created: bool = True  # False when identical data had been curated before

    def to_json(self) -> dict[str, Any]:
        d = self.dataset
        return {
            "dataset": d.id,
            "task": d.task,
            "content_hash": d.content_hash,
            "created": self.created,
            "calls": d.source_count,
            "train": d.train_count,
            "holdout": d.holdout_count,
            "intents": d.intents_count,
            "intent_method": self.intent_method,
            "removed": d.removed,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }


def _example_key(line: dict[str, Any]) -> str:
    return hashlib.blake2b(orjson.dumps(line, option=orjson.OPT_SORT_KEYS)).hexdigest()


def curate_calls(
    task_name: str,
    task: TaskConfig,
    calls: Sequence[Call],
    scores: Mapping[str, Sequence[Score]] | None = None,
    *,
    created_at: float | None = None,
) -> CurateReport:
    """Turn a task's calls into a dataset snapshot (not yet stored)."""
    cfg = task.curate
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = now - clock
        clock = now

    filtered = apply_filters(calls, task, scores)
    removed = dict(filtered.removed)
    lap("filters")
    examples = [to_example(c) for c in filtered.kept]
    lap("normalize")
    scrubber = Scrubber(cfg.pii)
    examples = [scrubber.example(e) for e in examples]
    lap("pii")
    result = dedupe(
        [e.dedupe_text() for e in examples],
        [e.created_at for e in examples],
        [e.call_id for e in examples],
        threshold=cfg.dedupe_threshold,
    )
    removed["duplicate"] = result.exact
    removed["near_duplicate"] = result.near
    examples = [examples[i] for i in result.kept]
    lap("dedupe")
    intents, method = assign_intents(
        [e.intent for e in examples],
        [e.user_text() or e.text() for e in examples],
        method=cfg.intents,
        seed=cfg.seed,
    )
    lap("intents")
    kept = cap_per_intent(
        intents,
        [e.created_at for e in examples],
        [e.call_id for e in examples],
        cfg.max_per_intent,
    )
    removed["intent_cap"] = len(examples) - len(kept)
    examples = [examples[i] for i in kept]
    intents = [intents[i] for i in kept]
    lines = [e.to_json() for e in examples]
    splits = stratified_split(
        [_example_key(line) for line in lines], intents, holdout=cfg.holdout, seed=cfg.seed
    )
    order = sorted(
        range(len(examples)), key=lambda i: (examples[i].created_at, examples[i].call_id)
    )
    rows = tuple(
        DatasetExample(
            position=pos,
            split=splits[i],
            call_id=examples[i].call_id,
            intent=intents[i],
            example=lines[i],
        )
        for pos, i in enumerate(order)
    )
    # the gateway's intent model for routing rules and per-intent reports (see intent_model.py)
    model = intent_model.fit([e.user_text() or e.text() for e in examples], intents)
    lap("split")
    config = {**cfg.model_dump(), **describe(task), "intent_method": method}
    if model is not None:
        config["intent_model"] = model.to_json()
    dataset = snapshot.build(
        task_name,
        rows,
        source_count=len(calls),
        removed=removed,
        config=config,
        created_at=created_at,
    )
    return CurateReport(dataset=dataset, examples=rows, seconds=seconds, intent_method=method)


def curate(store: TraceStore, config: Config, task_name: str) -> CurateReport:
    """Curate a task's captured calls and store the snapshot."""
    task = config.tasks.get(task_name)
    if task is None:
        known = ", ".join(sorted(config.tasks)) or "none configured"
        raise ConfigError(f"unknown task '{task_name}' (tasks: {known})")
    started = time.perf_counter()
    calls = store.calls_for_task(task_name)
    scores = store.scores_for_task(task_name)
    load_seconds = time.perf_counter() - started
    report = curate_calls(task_name, task, calls, scores)
    started = time.perf_counter()
    stored, created = snapshot.save(store, report.dataset, report.examples)
    seconds = {"load": load_seconds, **report.seconds, "save": time.perf_counter() - started}
    return CurateReport(
        dataset=stored,
        examples=report.examples,
        seconds=seconds,
        intent_method=report.intent_method,
        created=created,
    )

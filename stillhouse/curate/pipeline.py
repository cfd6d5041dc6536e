"""The curation pipeline: filters -> normalise -> PII -> dedupe -> intents -> caps -> groups ->
split.

`curate_calls` is pure (calls in, snapshot out) and times each stage; `curate` reads a task's
calls from the store and saves the snapshot. A call is never in a dataset unless it passed every
filter, and no text reaches a snapshot before it was scrubbed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..answers import canonical
from ..config import Config, TaskConfig
from ..store.base import TraceStore
from ..store.records import Call, Dataset, DatasetExample, Score
from ..toolcalls import assistant_text
from . import intent_model, snapshot
from .dedupe import dedupe, similar_pairs, words
from .filters import apply_filters, describe
from .intents import assign_intents
from .normalize import to_example, user_text
from .pii import Scrubber
from .split import (
    cap_per_intent,
    group_rows,
    group_split,
    holdout_similarity,
    teacher_consistency,
)

STAGES = ("filters", "normalize", "pii", "dedupe", "intents", "groups", "split")


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
            **_grouping(d.config),
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }


def _grouping(config: Mapping[str, Any]) -> dict[str, Any]:
    g = config.get("grouping") or {}
    return {
        "groups": g.get("groups"),
        "largest_group": g.get("largest"),
        "holdout_max_similarity_to_train": g.get("holdout_max_similarity_to_train"),
        "teacher_consistency": g.get("teacher_consistency"),
    }


def _leak(texts: Sequence[str], splits: Sequence[str], similarity: float) -> dict[str, Any]:
    leak = holdout_similarity(texts, splits, similarity=similarity)
    return {"holdout_max_similarity_to_train": leak.max_similarity, "exact": leak.exact}


def _corrected_intent(call: Call) -> str:
    meta = call.metadata if isinstance(call.metadata, dict) else {}
    return str(meta.get("intent") or meta.get("routed_intent") or "reviewed")


def _example_key(line: dict[str, Any]) -> str:
    return hashlib.blake2b(orjson.dumps(line, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _corrected(
    corrections: Sequence[tuple[Call, str]], scrubber: Scrubber, weight: int, start: int
) -> list[DatasetExample]:
    """People's corrections (the review queue) as training examples, each `weight` times."""
    out: list[DatasetExample] = []
    for call, text in corrections:
        answer = {"role": "assistant", "content": text}
        fixed = dataclasses.replace(call, response={"choices": [{"message": answer}]})
        example = scrubber.example(to_example(fixed))
        intent = _corrected_intent(call)
        for _ in range(weight):
            out.append(
                DatasetExample(
                    position=start + len(out),
                    split="train",
                    call_id=call.id,
                    intent=intent,
                    example=example.to_json(),
                )
            )
    return out


def curate_calls(
    task_name: str,
    task: TaskConfig,
    calls: Sequence[Call],
    scores: Mapping[str, Sequence[Score]] | None = None,
    *,
    created_at: float | None = None,
    corrections: Sequence[tuple[Call, str]] = (),
) -> CurateReport:
    """Turn a task's calls into a dataset snapshot (not yet stored). `corrections` (a reviewed
    call and a person's answer) go to the training split first-hand: never filtered, deduplicated
    or capped, repeated `review.correction_weight` times; a teacher's fallback answer to a
    corrected call is dropped in their favour."""
    cfg = task.curate
    corrected = {call.id for call, _ in corrections}
    superseded = len(calls)
    calls = [c for c in calls if (c.metadata or {}).get("fallback_of") not in corrected]
    superseded -= len(calls)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = now - clock
        clock = now

    filtered = apply_filters(calls, task, scores)
    removed = dict(filtered.removed)
    if corrections:
        removed["corrected"] = superseded
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
    # Corrections join the grouping as training rows, so their retellings stay out of the holdout.
    fixes = [scrubber.example(to_example(call)) for call, _ in corrections]
    texts = [e.user_text() for e in examples + fixes]
    groups = group_rows(texts, [e.group for e in examples + fixes], similarity=cfg.group_similarity)
    lap("groups")
    splits = group_split(
        [_example_key(line) for line in lines] + [f"correction:{e.call_id}" for e in fixes],
        intents + [_corrected_intent(call) for call, _ in corrections],
        groups,
        holdout=cfg.holdout,
        seed=cfg.seed,
        pinned=[False] * len(examples) + [True] * len(fixes),
    )
    sizes = Counter(groups[: len(examples)])
    answers = [canonical(task.gate.metric, assistant_text(e.messages[-1])) for e in examples]
    grouping = {
        "groups": len(sizes),
        "largest": max(sizes.values(), default=0),
        **_leak(texts, splits, cfg.group_similarity),
        "teacher_consistency": teacher_consistency(groups[: len(examples)], answers).to_json(),
    }
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
    rows += tuple(_corrected(corrections, scrubber, task.review.correction_weight, len(rows)))
    # the gateway's intent model for routing rules and per-intent reports (see intent_model.py)
    model = intent_model.fit([e.user_text() or e.text() for e in examples], intents)
    lap("split")
    config = {**cfg.model_dump(), **describe(task), "intent_method": method}
    config["grouping"] = grouping
    if corrections:
        config["corrections"] = sorted(corrected)
    if model is not None:
        config["intent_model"] = model.to_json()
    dataset = snapshot.build(
        task_name,
        rows,
        source_count=len(calls) + superseded,
        removed=removed,
        config=config,
        created_at=created_at,
    )
    return CurateReport(dataset=dataset, examples=rows, seconds=seconds, intent_method=method)


def mix_general(
    report: CurateReport,
    general: CurateReport,
    share: float,
    created_at: float | None = None,
    *,
    similarity: float = 0.5,
) -> CurateReport:
    """The forgetting guard: add general examples as `share` of the training split (a seeded
    choice among the general set's train part) and the general holdout as split `general`.
    A general row whose user turns are `similarity` alike to a task row of another split is
    left out (`general.dropped`): no group straddles train, holdout and general."""
    task_train = sum(e.split == "train" for e in report.examples)
    wanted = round(share / (1 - share) * task_train) if share > 0 else 0
    pool = sorted(
        (e for e in general.examples if e.split == "train"), key=lambda e: _example_key(e.example)
    )
    held = [e for e in general.examples if e.split == "holdout"]
    rows = list(report.examples) + pool + held
    pairs, _ = similar_pairs([words(user_text(e.example["messages"])) for e in rows], similarity)
    task, first_held = len(report.examples), len(report.examples) + len(pool)
    near: dict[int, set[str]] = {}  # general row -> splits of the rows it retells
    for i, j in pairs.tolist():
        if i < task <= j:
            near.setdefault(j, set()).add(rows[i].split)
    usable = [e for k, e in enumerate(pool, task) if near.get(k, {"train"}) == {"train"}]
    chosen = usable[:wanted]
    taken = {id(e) for e in chosen}
    for i, j in pairs.tolist():  # the pool's own split kept these apart; a choice may not
        if i < first_held <= j and id(rows[i]) in taken:
            near.setdefault(j, set()).add("train")
    kept = [e for k, e in enumerate(held, first_held) if k not in near]
    chosen = sorted(chosen, key=lambda e: e.position)
    extra = [dataclasses.replace(e, split="train") for e in chosen]
    extra += [dataclasses.replace(e, split="general") for e in kept]
    start = len(report.examples)
    rows = list(report.examples) + [
        dataclasses.replace(e, position=start + i) for i, e in enumerate(extra)
    ]
    d = report.dataset
    dropped = len(pool) - len(usable) + len(held) - len(kept)
    texts = [user_text(e.example["messages"]) for e in rows]
    config = {
        **d.config,
        "general": {
            "share": share,
            "train": len(chosen),
            "holdout": len(kept),
            "pool": len(pool),
            "dropped": dropped,
        },
        "grouping": {
            **d.config.get("grouping", {}),
            **_leak(texts, [e.split for e in rows], similarity),
        },
    }
    dataset = snapshot.build(
        d.task,
        tuple(rows),
        source_count=d.source_count,
        removed=d.removed,
        config=config,
        created_at=d.created_at if created_at is None else created_at,
    )
    return dataclasses.replace(report, dataset=dataset, examples=tuple(rows))


def _general(store: TraceStore, task_name: str, task: TaskConfig) -> CurateReport | None:
    """The task's general set curated like its own calls (intent "general"), or None."""
    from ..general import general_task

    name = general_task(task_name)
    calls = store.calls_for_task(name)
    if task.general.share <= 0 or not calls:
        return None
    settings = task.model_copy(
        update={
            "curate": task.curate.model_copy(
                update={
                    "intents": "metadata",
                    "holdout": task.general.holdout,
                    "max_per_intent": None,
                }
            )
        }
    )
    return curate_calls(name, settings, calls, store.scores_for_task(name))


def curate(store: TraceStore, config: Config, task_name: str) -> CurateReport:
    """Curate a task's captured calls and store the snapshot."""
    task = config.task(task_name)
    started = time.perf_counter()
    calls = store.calls_for_task(task_name)
    scores = store.scores_for_task(task_name)
    from ..review import corrections

    fixed = corrections(store, task_name)
    load_seconds = time.perf_counter() - started
    report = curate_calls(task_name, task, calls, scores, corrections=fixed)
    general = _general(store, task_name, task)
    if general is not None:
        report = mix_general(
            report, general, task.general.share, similarity=task.curate.group_similarity
        )
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

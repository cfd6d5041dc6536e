"""`stillhouse eval` as a library call: serve a dataset's holdout through a candidate (and the
serving student, when there is one), score it against the teacher's answers, calibrate the
confidence threshold, apply the gate, write the report beside the run and store the eval run.

It never changes what serves: it only records a verdict the lifecycle (or a person) acts on.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..answers import SIGNALS, agreements, canonical, format_ok, hallucinated
from ..config import Config, ModelConfig, TaskConfig
from ..errors import StillhouseError
from ..stats import binomial_interval, mean, paired_difference_ci, percentile, rate_interval
from ..store.base import TraceStore
from ..store.records import Candidate, Verdict, new_id
from ..toolcalls import assistant_text
from . import by_intent, metrics
from .calibrate import CALIBRATED, Calibration, calibrate, coverage
from .gate import Evidence, Rules, decide
from .serve import Answer, serve


@dataclass(frozen=True, slots=True)
class Item:
    """One holdout example: the request as the teacher saw it and the teacher's answer (its tool
    calls as `<tool_call>` blocks, which agreement compares as calls)."""

    call_id: str
    intent: str
    messages: tuple[dict[str, Any], ...]
    teacher: str
    reference: Any = None  # the call's metadata.reference, when it carried one
    tools: Any = None


def holdout_items(store: TraceStore, dataset_id: str, split: str = "holdout") -> list[Item]:
    """The dataset's holdout (or its `general` holdout) as (request, teacher answer) pairs, cut at
    the last assistant turn."""
    items = []
    for e in store.dataset_examples(dataset_id, split):
        messages = e.example["messages"]
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
        teacher = assistant_text(messages[last]) if last >= 1 else ""
        if not teacher:
            continue  # no request before the answer, or an answer with nothing in it
        call = store.get_call(e.call_id)
        reference = (call.metadata or {}).get("reference") if call is not None else None
        items.append(
            Item(
                e.call_id,
                e.intent,
                tuple(messages[:last]),
                teacher,
                reference,
                e.example.get("tools"),
            )
        )
    return items


def request_bodies(
    items: Sequence[Item],
    prompt: dict[str, Any] | None,
    task: TaskConfig | None = None,
    name: str = "answer",
) -> list[dict[str, Any]]:
    """Greedy chat requests; the token cap is twice the teacher's answer in characters (a token is
    rarely shorter than a character) so a rambling student is cut, not waited for. Under the
    task's response_schema when it constrains its student, as the gateway serves it."""
    from ..openai.protocol import apply_prompt, constrain

    bodies = []
    for item in items:
        messages = list(item.messages)
        body: dict[str, Any] = {
            "messages": apply_prompt(prompt, messages) if prompt else messages,
            "temperature": 0,
            "max_tokens": 2 * len(item.teacher) + 16,
            "logprobs": True,
        }
        if item.tools:
            body["tools"] = item.tools
        if task is not None and task.constrain_student:
            constrain(body, task.response_schema, name)
        bodies.append(body)
    return bodies


def _candidate(store: TraceStore, task: str, candidate_id: str) -> Candidate:
    candidate = store.get_candidate(candidate_id)
    if candidate is None:
        raise StillhouseError(f"no candidate {candidate_id!r} (see `stillhouse candidates`)")
    if candidate.task != task:
        raise StillhouseError(f"candidate {candidate_id} belongs to task '{candidate.task}'")
    return candidate


def _price_model(config: Config, task: TaskConfig, model: ModelConfig) -> ModelConfig:
    """A local student has no price of its own: the task's student model's (a GPU hour) counts."""
    if model.price is None and task.student and config.models[task.student].price is not None:
        return model.model_copy(update={"price": config.models[task.student].price})
    return model


def _scores(
    config: Config, task: TaskConfig, items: Sequence[Item], answers: Sequence[Answer]
) -> tuple[list[metrics.Scored], str]:
    """(one score per item, how similarity was measured)."""
    students = [a.text for a in answers]
    teachers = [i.teacher for i in items]
    metric = task.gate.metric
    if metric == "similarity":
        return metrics.similarity(students, teachers)
    if metric != "judge":
        return metrics.score(metric, students, teachers), metric
    teacher = config.models[task.teacher]
    requests = [str(i.messages[-1].get("content") or "") for i in items]

    async def grade() -> list[metrics.Scored]:
        from ..providers import SharedSession, build_provider

        session = SharedSession()
        await session.open()
        try:
            provider = build_provider(task.teacher, teacher, session)

            async def complete(body: dict[str, Any]) -> dict[str, Any]:
                return await provider.complete({"model": teacher.model, **body})

            return await metrics.judge(complete, requests, students, teachers)
        finally:
            await session.close()

    return asyncio.run(grade()), "judge"


def _write_answers(
    path: Path,
    items: Sequence[Item],
    answers: Sequence[Answer],
    agree: Sequence[float],
    compliant: Sequence[bool],
) -> Path:
    """One line per holdout example (the call, its intent, the teacher's and the candidate's
    answers, the score, format compliance, confidence): what a failed gate is read from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for item, answer, a, ok in zip(items, answers, agree, compliant, strict=True):
            row = {
                "call": item.call_id,
                "intent": item.intent,
                "teacher": item.teacher,
                "candidate": answer.text,
                "agreement": a,
                "format_ok": ok,
                "confidence": {s: (answer.confidence or {}).get(s) for s in SIGNALS},
                "token_logprobs": [round(lp, 4) for lp in answer.logprobs],
                "error": answer.error,
            }
            f.write(json.dumps(row) + "\n")
    return path


def _serve_candidate(
    candidate: Candidate, items: Sequence[Item], concurrency: int, task: TaskConfig | None = None
) -> tuple[ModelConfig, list[Answer]]:
    """`task`: serve under its response_schema (the task's holdout; never the general one)."""
    model = ModelConfig.of_serving(candidate.serving)
    bodies = request_bodies(items, candidate.artifacts.get("prompt"), task, candidate.task)
    return model, serve(candidate.id, model, bodies, concurrency)


def _general(
    store: TraceStore,
    config: Config,
    settings: TaskConfig,
    candidate: Candidate,
    dataset_id: str,
    incumbent: str | None,
    concurrency: int,
) -> dict[str, Any] | None:
    """The forgetting guard: agreement on the dataset's general holdout, for the candidate and for
    a baseline (the serving student, else the base model without the adapter)."""
    items = holdout_items(store, dataset_id, "general")
    if not items:
        return None
    _, answers = _serve_candidate(candidate, items, concurrency)
    agreement = mean([s.agree for s in _scores(config, settings, items, answers)[0]])
    baseline, baseline_of = None, None
    if incumbent is not None:
        _, theirs = _serve_candidate(
            _candidate(store, candidate.task, incumbent), items, concurrency
        )
        baseline_of = incumbent
    else:
        model = ModelConfig.of_serving(candidate.serving)
        theirs = []
        if model.provider == "local" and model.adapter:
            base = model.model_copy(update={"adapter": None})
            theirs = serve(f"{candidate.id}-base", base, request_bodies(items, None), concurrency)
            baseline_of = f"{model.model} (base, no adapter)"
    if theirs:
        baseline = mean([s.agree for s in _scores(config, settings, items, theirs)[0]])
    return {
        "n": len(items),
        "agreement": agreement,
        "baseline": baseline,
        "baseline_of": baseline_of,
    }


def majority_baseline(metric: metrics.Metric, teachers: Sequence[str]) -> dict[str, Any] | None:
    """The agreement a student would get by giving the teacher's most common answer to every
    example (answers counted by `answers.canonical`): the bar a candidate must beat, so that a
    constant answer cannot pass a skewed task."""
    if not teachers:
        return None
    keys = [canonical(metric, t) for t in teachers]
    counts: dict[str, int] = defaultdict(int)
    for key in keys:
        counts[key] += 1
    top = max(counts, key=lambda k: (counts[k], k))
    answer = teachers[keys.index(top)]
    verdicts, _ = agreements(metric, teachers, [answer] * len(teachers))
    distinct = len(counts) / len(teachers)  # near 1: free text, each answer its own
    return {"answer": answer, "agreement": sum(verdicts) / len(verdicts), "distinct": distinct}


def _operating_point(calibration: Calibration, rules: Rules) -> dict[str, Any] | None:
    """The headline: the share of answers the student keeps at its calibrated threshold, and
    their agreement with its lower bound, both out of sample (None: nothing was judged)."""
    held = calibration.held_out
    if held is None:
        return None
    return {
        "threshold": calibration.threshold,
        "coverage": 1.0 - held.teacher_share,
        "kept_agreement": held.kept_agreement,
        "kept_low": held.kept_low,
        "target": calibration.target,
        "min_coverage": rules.min_coverage,
    }


def report_dir(candidate: Candidate, eval_id: str) -> Path:
    """Beside the candidate's training run when it has one, else under Stillhouse's home."""
    from ..engine.sources import home

    run_dir = candidate.artifacts.get("run_dir")
    root = Path(run_dir) / "evals" if run_dir else home() / "evals"
    return root / eval_id


def evaluate(
    store: TraceStore,
    config: Config,
    task: str,
    candidate_id: str,
    *,
    dataset: str | None = None,
    incumbent: str | None = None,
    concurrency: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate, gate, report and store: the `eval --json` document. `incumbent`: the student
    serving the task, which the candidate must not be worse than (the caller knows who serves:
    `lifecycle.events.serving_student`)."""
    started = time.perf_counter()
    settings = config.task(task)
    candidate = _candidate(store, task, candidate_id)
    dataset_id = dataset or candidate.dataset_id
    items = holdout_items(store, dataset_id)
    if not items:
        raise StillhouseError(f"dataset {dataset_id} has no holdout examples to evaluate on")

    def say(line: str) -> None:
        if progress:
            print(line, file=sys.stderr, flush=True)

    say(f"serving {len(items)} holdout examples through {candidate.id}")
    model, answers = _serve_candidate(candidate, items, concurrency, settings)
    scored, method = _scores(config, settings, items, answers)
    agree = [s.agree for s in scored]
    low, high = rate_interval(agree)
    signals = {s: [(a.confidence or {}).get(s) for a in answers] for s in SIGNALS}
    baseline = majority_baseline(settings.gate.metric, [i.teacher for i in items])
    schema = settings.response_schema
    compliant = [format_ok(a.text, a.finish_reason, settings.gate.metric, schema) for a in answers]
    referenced = [(i, a) for i, a in zip(items, answers, strict=True) if i.reference is not None]
    hallucinations = [
        hallucinated(settings.gate.metric, a.text, i.reference) for i, a in referenced
    ]
    ok = [a for a in answers if a.error is None]
    latencies = [a.latency_ms for a in ok]
    price = _price_model(config, settings, model)
    from ..pricing import call_cost, price_for

    costs = [
        c
        for a in ok
        if (c := call_cost(price_for(price), a.input_tokens, a.output_tokens)) is not None
    ]
    intents = [item.intent for item in items]
    calibration = calibrate(
        {s: signals[s] for s in CALIBRATED},
        agree,
        settings.gate.kept_agreement,
        seed=seed,
        intents=intents,
    )
    confidences = signals[calibration.signal]  # the coverage curves are drawn on the chosen one
    per_intent, intent_curves = by_intent.per_intent(intents, agree, confidences)

    versus: dict[str, Any] | None = None
    if incumbent is not None and incumbent != candidate.id:
        say(f"serving the same examples through the serving student {incumbent}")
        _, theirs = _serve_candidate(
            _candidate(store, task, incumbent), items, concurrency, settings
        )
        their_agree = [s.agree for s in _scores(config, settings, items, theirs)[0]]
        d_low, d_high = paired_difference_ci(agree, their_agree, seed=seed)
        versus = {
            "candidate": incumbent,
            "agreement": mean(their_agree),
            "difference_ci": [d_low, d_high],
        }

    general = _general(store, config, settings, candidate, dataset_id, incumbent, concurrency)
    if general is not None:
        say(f"general holdout: agreement {general['agreement']}, baseline {general['baseline']}")

    p95 = percentile(latencies, 95)
    rules = Rules.of(settings.gate, settings.routing.fallback)
    decision = decide(
        rules,
        n=len(items),
        agreement_ci=(low, high),
        format_compliance=sum(compliant) / len(compliant),
        p95_ms=p95,
        versus_ci=tuple(versus["difference_ci"]) if versus else None,  # type: ignore[arg-type]
        general=(general["agreement"], general["baseline"]) if general else None,
        evidence=Evidence(
            agreement=mean(agree),
            majority_baseline=baseline["agreement"] if baseline else None,
            distinct_answers=baseline["distinct"]
            if baseline and settings.gate.metric == "exact"
            else None,
            intents={k: (v["n"], v["agreement_ci"][1]) for k, v in per_intent.items()},
            kept_low=calibration.held_out.kept_low if calibration.held_out else None,
            coverage=1.0 - calibration.held_out.teacher_share if calibration.held_out else None,
            kept_intents=by_intent.kept_per_intent(intents, agree, confidences, calibration),
        ),
    )
    n_ok = sum(compliant)
    eval_id = new_id("eval")
    doc: dict[str, Any] = {
        "eval": eval_id,
        "candidate": candidate.id,
        "task": task,
        "dataset": dataset_id,
        "metric": settings.gate.metric,
        "method": method,
        "n": len(items),
        "agreement": mean(agree),
        "agreement_ci": [low, high],
        "field_agreement": mean([s.fields for s in scored if s.fields is not None]),
        "per_intent": per_intent,
        "majority_baseline": baseline,
        "general_agreement": general["agreement"] if general else None,
        "general": general,
        "format_compliance": n_ok / len(compliant),
        "format_compliance_ci": list(binomial_interval(n_ok, len(compliant))),
        "hallucination": {
            "n": len(referenced),
            "rate": mean([float(h) for h in hallucinations]),
            "rate_ci": list(rate_interval([float(h) for h in hallucinations])),
        },
        "latency_ms": {"p50": percentile(latencies, 50), "p95": p95},
        "concurrency": concurrency,
        "errors": len(answers) - len(ok),
        "error_rate_ci": list(binomial_interval(len(answers) - len(ok), len(answers))),
        "cost_per_call": mean(costs),
        "confidence_threshold": calibration.threshold,
        "calibration": calibration.to_json(),
        "kept_agreement": (calibration.held_out.kept_agreement if calibration.held_out else None),
        "kept_agreement_ci": (
            list(
                binomial_interval(
                    (calibration.held_out.kept_agreement or 0.0) * calibration.held_out.kept,
                    calibration.held_out.kept,
                )
            )
            if calibration.held_out and calibration.held_out.kept
            else None
        ),
        "coverage": {"overall": coverage(confidences, agree), "per_intent": intent_curves},
        "operating_point": _operating_point(calibration, rules),
        "versus": versus,
        "gate": {
            "rules": rules.to_json(),
            "checks": [c.to_json() for c in decision.checks],
        },
        "passed": decision.passed,
        "reason": decision.reason,
    }
    from .report import write

    folder = report_dir(candidate, eval_id)
    doc["report"] = {k: str(v) for k, v in write(doc, folder).items()}
    doc["report"]["json"] = str(folder / "eval.json")
    doc["report"]["answers"] = str(
        _write_answers(folder / "answers.jsonl", items, answers, agree, compliant)
    )
    doc["seconds"] = round(time.perf_counter() - started, 3)
    from ..registry import record_eval_run

    record_eval_run(
        store,
        candidate.id,
        dataset_id=dataset_id,
        config={
            "task": task,
            "metric": settings.gate.metric,
            "gate": rules.to_json(),
            "kept_agreement": settings.gate.kept_agreement,
            "concurrency": concurrency,
            "seed": seed,
            "incumbent": incumbent,
        },
        metrics={k: v for k, v in doc.items() if k != "eval"},
        passed=decision.passed,
        run_id=eval_id,
    )
    (folder / "eval.json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def validate(
    store: TraceStore,
    config: Config,
    task: str,
    candidate: str,
    *,
    incumbent: str | None = None,
) -> Verdict:
    """Evaluate `candidate` on its dataset's holdout (against `incumbent` when one serves),
    store the eval run, and return the gate's verdict: the lifecycle's validation step."""
    doc = evaluate(store, config, task, candidate, incumbent=incumbent, progress=False)
    return Verdict(
        passed=bool(doc["passed"]),
        reason=str(doc["reason"]),
        threshold=doc["confidence_threshold"],
        signal=str(doc["calibration"]["signal"]),
        intent_thresholds=doc["calibration"]["intent_thresholds"],
        eval_run_id=str(doc["eval"]),
        metrics={
            k: doc[k]
            for k in ("agreement", "agreement_ci", "kept_agreement", "format_compliance", "n")
        },
    )

"""The transitions the controller and people make, as pure functions of a task's state: promote a
candidate that passed the gate, the next rollout stage, a rollback. Nothing here reads the store.
"""

from __future__ import annotations

from typing import Any

from ..config import TaskConfig
from .states import State, TaskState
from .steps import Verdict


def judged(verdict: Verdict) -> dict[str, Any]:
    """What a transition after validation stores: the eval run and the figures it was judged on."""
    return {"eval_run": verdict.eval_run_id, "validation": verdict.metrics}


def share_of(task: TaskConfig, stage: int) -> float:
    return min(task.rollout.stages[stage], task.rollout.final_share) / 100


def promote(task: TaskConfig, state: TaskState, candidate: str, verdict: Verdict) -> TaskState:
    """A candidate that passed the gate starts at the first rollout stage. A retrained one
    rolls out against the serving student: sessions outside its share stay with that
    incumbent, and its gates compare with it."""
    retrain = state.detail.get("incumbent") is not None
    keep = {k: state.detail[k] for k in ("incumbent", "incumbent_detail") if retrain}
    return state.moved(
        State.ROLLOUT,
        f"{candidate} passed the gate: {verdict.reason}",
        stage=0,
        share=share_of(task, 0),
        candidate_id=candidate,
        detail={
            "dataset": state.detail["dataset"],
            "threshold": verdict.threshold,
            "signal": verdict.signal,
            "intent_thresholds": verdict.intent_thresholds,
            **judged(verdict),
            **keep,
        },
    )


def next_stage(
    task: TaskConfig, state: TaskState, reason: str, evidence: dict[str, Any], now: float
) -> TaskState:
    stage = state.stage + 1
    detail = {**state.detail, "evidence": evidence}
    detail.pop("paused_from", None)
    if stage >= len(task.rollout.stages):
        detail.pop("incumbent", None)  # the retrained candidate has replaced it
        detail.pop("incumbent_detail", None)
        return state.moved(
            State.SERVING,
            reason,
            stage=-1,
            share=task.rollout.final_share / 100,
            detail={**detail, "serving_since": now},
        )
    return state.moved(
        State.ROLLOUT, reason, stage=stage, share=share_of(task, stage), detail=detail
    )


def rolled_back(state: TaskState, reason: str, evidence: dict[str, Any], now: float) -> TaskState:
    return state.moved(
        State.ROLLED_BACK,
        reason,
        stage=-1,
        share=0.0,
        detail={
            "collect_since": now,
            "evidence": evidence,
            "rolled_back": state.candidate_id,
            "dataset": state.detail.get("dataset"),  # what it learnt from: not to be trained again
        },
    )

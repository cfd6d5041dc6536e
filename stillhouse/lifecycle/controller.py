"""The lifecycle controller: one pass (`tick`) moves each auto-mode task at most one step through
the transition table and stores the transition with its reason, then publishes the routing table.

It runs off the request path: in a background thread of `stillhouse serve`, or alone as
`stillhouse worker`; a lock (a PostgreSQL advisory lock, a file lock beside a SQLite store) makes
exactly one controller act. Its state is only the stored events, so a restarted controller
resumes where the last one stopped. Long steps (curating, training) run inside the tick.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config import Config, TaskConfig
from ..errors import ConfigError, StillhouseError
from ..routing import RoutingTable
from ..store import open_store
from ..store.base import TraceStore
from . import events
from .monitor import check_drift
from .rollout import GateResult, collect, judge
from .states import State, TaskState
from .table import entry_of

log = logging.getLogger("stillhouse.lifecycle")


@dataclass(frozen=True, slots=True)
class Verdict:
    """A candidate's validation: passed the gate or not, why, and its calibrated confidence
    threshold for fallback (None: no fallback)."""

    passed: bool
    reason: str
    threshold: float | None = None
    eval_run_id: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


class Steps(Protocol):
    """The long steps the controller runs: the real ones by default, small fakes in tests."""

    def curate(self, store: TraceStore, config: Config, task: str) -> str: ...

    def optimize(self, store: TraceStore, config: Config, task: str, dataset_id: str) -> str: ...

    def train(
        self, store: TraceStore, config: Config, task: str, dataset_id: str, parent: str | None
    ) -> str: ...

    def validate(
        self, store: TraceStore, config: Config, task: str, candidate: str, incumbent: str | None
    ) -> Verdict: ...


class DefaultSteps:
    """curate(), optimize_task(), train_task() and the evaluation gate of stillhouse.evaluate;
    `progress`: a training progress bar on stderr (the demo shows it)."""

    def __init__(self, progress: bool = False) -> None:
        self.progress = progress

    def curate(self, store: TraceStore, config: Config, task: str) -> str:
        from ..curate.pipeline import curate

        return curate(store, config, task).dataset.id

    def optimize(self, store: TraceStore, config: Config, task: str, dataset_id: str) -> str:
        from ..optimize import optimize_task

        return optimize_task(store, config, task, dataset=dataset_id)[0].id

    def train(
        self, store: TraceStore, config: Config, task: str, dataset_id: str, parent: str | None
    ) -> str:
        from ..train.run import train_task

        candidate, _ = train_task(
            store, config, task, dataset=dataset_id, progress=self.progress, parent=parent
        )
        return candidate.id

    def validate(
        self, store: TraceStore, config: Config, task: str, candidate: str, incumbent: str | None
    ) -> Verdict:
        from ..evaluate import gate

        result = gate.validate(store, config, task, candidate, incumbent=incumbent)
        return Verdict(
            passed=bool(result.passed),
            reason=str(result.reason),
            threshold=result.threshold,
            eval_run_id=result.eval_run_id,
            metrics=dict(result.metrics),
        )


def _judged(verdict: Verdict) -> dict[str, Any]:
    """What a transition after validation stores: the eval run and the figures it was judged on."""
    return {"eval_run": verdict.eval_run_id, "validation": verdict.metrics}


def _share(task: TaskConfig, stage: int) -> float:
    return min(task.rollout.stages[stage], task.rollout.final_share) / 100


class Controller:
    def __init__(
        self,
        config: Config,
        *,
        steps: Steps | None = None,
        routing: RoutingTable | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.steps: Steps = steps or DefaultSteps()
        self.routing = routing
        self.clock = clock

    # -- one pass ---------------------------------------------------------------------------
    def tick(self) -> dict[str, TaskState]:
        """Move every auto-mode task at most one step; returns each task's state after it."""
        out = {}
        with open_store(self.config.store.url) as store:
            for name in sorted(self.config.tasks):
                try:
                    out[name] = self.step(store, name)
                except Exception:
                    # A failed step (training crashed, store hiccup) is retried next tick.
                    log.exception("lifecycle step for task %s failed", name)
                    out[name] = events.current(store, name)
            try:  # a sample of student answers and fallback disagreements, for people
                from ..review import enqueue

                enqueue(store, self.config)
            except Exception:
                log.exception("filling the review queue failed")
            if self.routing is not None:
                self.routing.publish({n: entry_of(s, store) for n, s in out.items()})
                from ..curate.intent_model import newest_models

                self.routing.publish_intents(newest_models(store))
        return out

    def step(self, store: TraceStore, name: str) -> TaskState:
        task = self.config.tasks[name]
        state = events.current(store, name)
        mode = state.mode or task.mode
        if mode != "auto" or task.student is None or state.state is State.PAUSED:
            return state
        now = self.clock()
        handler = getattr(self, f"_{state.state.value}")
        new: TaskState | None = handler(store, name, task, state, now)
        if new is None:
            return state
        return events.record(store, new, previous=state.state)

    # -- one method per state: the next state, or None to stay ---------------------------------
    def _grace(
        self, store: TraceStore, name: str, task: TaskConfig, state: TaskState, now: float
    ) -> TaskState | None:
        since = state.detail.get("collect_since")
        if since is None:
            from ..curate.readiness import grace_readiness

            ready = grace_readiness(store, self.config, now)[name]
            if not ready["ready"]:
                return None
            met = ", ".join(k for k, v in ready["met"].items() if v)
            return state.moved(State.CURATING, f"grace met: {met}", detail={})
        fresh = store.new_teacher_calls(name, since)
        if fresh < task.grace.min_conversations and now - since < task.grace.max_days * 86400:
            return None
        return state.moved(
            State.CURATING, f"{fresh} new teacher calls since {since:.0f}", detail={}
        )

    def _curating(
        self, store: TraceStore, name: str, task: TaskConfig, state: TaskState, now: float
    ) -> TaskState | None:
        dataset = self.steps.curate(store, self.config, name)
        # the cheap first candidate (a retrain of a serving student goes straight to training)
        return state.moved(
            State.OPTIMIZING if task.optimize.prompt else State.TRAINING,
            f"curated {dataset}",
            detail={**state.detail, "dataset": dataset},
        )

    def _optimizing(
        self, store: TraceStore, name: str, task: TaskConfig, state: TaskState, now: float
    ) -> TaskState | None:
        """A few-shot prompt on the student's base model, judged by the same gate: it rolls
        out when it passes alone; else a LoRA is trained on the same dataset."""
        dataset = state.detail["dataset"]
        candidate = self.steps.optimize(store, self.config, name, dataset)
        verdict = self.steps.validate(store, self.config, name, candidate, None)
        if verdict.passed:
            return self._promote(task, state, candidate, verdict)
        return state.moved(
            State.TRAINING,
            f"prompt {candidate} failed the gate: {verdict.reason}; training a LoRA",
            detail={**state.detail, "prompt": candidate, "prompt_eval_run": verdict.eval_run_id},
        )

    def _training(
        self, store: TraceStore, name: str, task: TaskConfig, state: TaskState, now: float
    ) -> TaskState | None:
        dataset = state.detail.get("dataset") or self.steps.curate(store, self.config, name)
        return self._train(store, name, state, dataset, "trained")

    def _train(
        self, store: TraceStore, name: str, state: TaskState, dataset: str, verb: str
    ) -> TaskState:
        """Train a candidate on `dataset` (the serving student as its parent) and validate it."""
        incumbent = state.detail.get("incumbent")
        candidate = self.steps.train(store, self.config, name, dataset, incumbent)
        return state.moved(
            State.VALIDATING,
            f"{verb} {candidate} on {dataset}",
            detail={**state.detail, "dataset": dataset, "trained": candidate},
        )

    def _validating(
        self, store: TraceStore, name: str, task: TaskConfig, state: TaskState, now: float
    ) -> TaskState | None:
        candidate = state.detail["trained"]
        incumbent = state.detail.get("incumbent")
        verdict = self.steps.validate(store, self.config, name, candidate, incumbent)
        if verdict.passed:
            return self._promote(task, state, candidate, verdict)
        checked = _judged(verdict)
        reason = f"{candidate} failed the gate: {verdict.reason}"
        if incumbent is not None:  # a retrain that did not beat production: keep production
            return state.moved(
                State.SERVING,
                f"{reason}; {incumbent} keeps serving",
                detail={**state.detail["incumbent_detail"], "serving_since": now, **checked},
            )
        return state.moved(
            State.GRACE, f"{reason}; collecting more data", detail={"collect_since": now, **checked}
        )

    def _promote(
        self, task: TaskConfig, state: TaskState, candidate: str, verdict: Verdict
    ) -> TaskState:
        """A candidate that passed the gate starts at the first rollout stage. A retrained one
        rolls out against the serving student: sessions outside its share stay with that
        incumbent, and its gates compare with it."""
        retrain = state.detail.get("incumbent") is not None
        keep = {k: state.detail[k] for k in ("incumbent", "incumbent_detail") if retrain}
        return state.moved(
            State.ROLLOUT,
            f"{candidate} passed the gate: {verdict.reason}",
            stage=0,
            share=_share(task, 0),
            candidate_id=candidate,
            detail={
                "dataset": state.detail["dataset"],
                "threshold": verdict.threshold,
                **_judged(verdict),
                **keep,
            },
        )

    def _rollout(
        self, store: TraceStore, name: str, task: TaskConfig, state: TaskState, now: float
    ) -> TaskState | None:
        since, metric = state.created_at, task.gate.metric
        incumbent = state.detail.get("incumbent")
        result: GateResult = judge(
            task,
            collect(store, name, since, state.candidate_id, metric),
            now - since,
            collect(store, name, since, incumbent, metric) if incumbent else None,
        )
        if result.outcome == "wait":
            log.debug("%s: stage %.0f%% waits: %s", name, state.share * 100, result.reason)
            return None
        reason = f"stage {state.share:.0%} gate failed: {result.reason}"
        if result.outcome == "fail" and incumbent:
            # 0% for the retrained candidate: the student it was to replace serves everyone
            return state.moved(
                State.SERVING,
                f"{reason}; {incumbent} keeps serving",
                stage=-1,
                share=task.rollout.final_share / 100,
                candidate_id=incumbent,
                detail={
                    **state.detail["incumbent_detail"],
                    "serving_since": now,
                    "evidence": result.evidence,
                    "rolled_back": state.candidate_id,
                },
            )
        if result.outcome == "fail":
            return self._rolled_back_from(state, reason, result.evidence, now)
        return self._next_stage(
            task, state, f"stage {state.share:.0%} passed: {result.reason}", result.evidence, now
        )

    def _next_stage(
        self, task: TaskConfig, state: TaskState, reason: str, evidence: dict[str, Any], now: float
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
            State.ROLLOUT, reason, stage=stage, share=_share(task, stage), detail=detail
        )

    def _rolled_back_from(
        self, state: TaskState, reason: str, evidence: dict[str, Any], now: float
    ) -> TaskState:
        return state.moved(
            State.ROLLED_BACK,
            reason,
            stage=-1,
            share=0.0,
            detail={"collect_since": now, "evidence": evidence, "rolled_back": state.candidate_id},
        )

    def _serving(
        self, store: TraceStore, name: str, task: TaskConfig, state: TaskState, now: float
    ) -> TaskState | None:
        drift = check_drift(store, name, task, state.detail.get("dataset"), now)
        reason = f"drift: {drift.reason}" if drift.drifted else None
        since = float(state.detail.get("serving_since") or state.created_at)
        if reason is None and task.retrain_every is not None and now - since >= task.retrain_every:
            reason = f"periodic: serving for {now - since:.0f} s >= retrain_every"
        if reason is None:
            return None
        detail = {
            "incumbent": state.candidate_id,
            "incumbent_detail": state.detail,
            "drift": drift.detail,
        }
        return state.moved(State.RETRAINING, reason, detail=detail)

    def _retraining(
        self, store: TraceStore, name: str, task: TaskConfig, state: TaskState, now: float
    ) -> TaskState | None:
        # The serving student keeps its share while the new one is curated and trained.
        dataset = self.steps.curate(store, self.config, name)
        return self._train(store, name, state, dataset, "retrained")

    def _rolled_back(
        self, store: TraceStore, name: str, task: TaskConfig, state: TaskState, now: float
    ) -> TaskState | None:
        since = float(state.detail.get("collect_since") or state.created_at)
        fresh = store.new_teacher_calls(name, since)
        if fresh < task.grace.min_conversations and now - since < task.grace.max_days * 86400:
            return None
        return state.moved(
            State.CURATING, f"{fresh} new teacher calls since the rollback", detail={}
        )

    def _paused(self, *args: Any) -> TaskState | None:
        return None

    # -- running ----------------------------------------------------------------------------
    def run(self, stop: threading.Event, interval: float | None = None) -> None:
        """Tick every `interval` (default lifecycle.tick) seconds while holding the controller
        lock; stand by while another controller holds it."""
        interval = interval or self.config.lifecycle.tick
        while not stop.is_set():
            with controller_lock(self.config.store.url) as held:
                if not held:
                    log.info("another controller holds the lock: standing by")
                while held and not stop.is_set():
                    self.tick()
                    stop.wait(interval)
            stop.wait(interval)


@contextlib.contextmanager
def controller_lock(store_url: str) -> Iterator[bool]:
    """Yield True while this process holds the one controller lock of the store, else False."""
    with open_store(store_url, migrate=False) as store, store.controller_lock() as held:
        yield held


# -- what people do (the CLI's verbs) -----------------------------------------------------------
def _task(config: Config, name: str) -> TaskConfig:
    task = config.tasks.get(name)
    if task is None:
        known = ", ".join(sorted(config.tasks)) or "none configured"
        raise ConfigError(f"unknown task '{name}' (tasks: {known})")
    return task


def set_mode(
    store: TraceStore, config: Config, name: str, mode: str, *, force: bool = False
) -> TaskState:
    """Store a mode for the task; gateways pick it up with their next routing table. `student`
    is refused, unless forced, before the student has been stable (see lifecycle/safety.py)."""
    task = _task(config, name)
    if mode != "teacher" and task.student is None:
        raise StillhouseError(f"task '{name}' has no student: set tasks.{name}.student first")
    if mode == "student" and not force:
        from .safety import student_readiness

        ready = student_readiness(store, name, task, time.time())
        if not ready.allowed:
            raise StillhouseError(f"refused: {ready.reason}")
    state = events.current(store, name)
    new = dataclasses.replace(state, mode=mode, reason=f"mode set to {mode}")
    return events.record(store, new, previous=state.state, kind="mode")


def advance(store: TraceStore, config: Config, name: str) -> TaskState:
    """Move a rollout (or a paused one) to its next stage now, without waiting for the gate."""
    task = _task(config, name)
    state = events.current(store, name)
    if (
        state.state not in (State.ROLLOUT, State.PAUSED)
        or state.candidate_id is None
        or state.stage < 0
    ):
        raise StillhouseError(
            f"task '{name}' is {state.state}, not rolling out: nothing to advance"
        )
    ctl = Controller(config)
    new = ctl._next_stage(task, state, "advanced by hand", {}, time.time())
    return events.record(store, new, previous=state.state)


def pause(store: TraceStore, config: Config, name: str) -> TaskState:
    """Freeze the task where it is: its share stays, the controller leaves it alone."""
    _task(config, name)
    state = events.current(store, name)
    if state.state is State.PAUSED:
        return state
    new = state.moved(
        State.PAUSED, "paused by hand", detail={**state.detail, "paused_from": str(state.state)}
    )
    return events.record(store, new, previous=state.state)


def rollback(store: TraceStore, config: Config, name: str) -> TaskState:
    """Send every session back to the teacher and go back to collecting data."""
    _task(config, name)
    state = events.current(store, name)
    ctl = Controller(config)
    new = ctl._rolled_back_from(state, "rolled back by hand", {}, time.time())
    return events.record(store, new, previous=state.state)

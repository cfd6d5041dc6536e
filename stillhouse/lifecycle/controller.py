"""The lifecycle controller: one pass (`tick`) moves each auto-mode task at most one step through
the transition table and stores the transition with its reason, then publishes the routing table.

It runs off the request path: in a background thread of `stillhouse serve`, or alone as
`stillhouse worker`; a lock (a PostgreSQL advisory lock, a file lock beside a SQLite store) makes
exactly one controller act. Its state is only the stored events, so a restarted controller
resumes where the last one stopped. Long steps (curating, training) run inside the tick.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

from ..config import Config, TaskConfig
from ..routing import RoutingTable
from ..store import open_store
from ..store.base import TraceStore
from . import events
from .monitor import check_drift
from .rollout import GateResult, collect, judge
from .states import State, TaskState
from .steps import Steps
from .table import entry_of, newest_models
from .transitions import judged, next_stage, promote, rolled_back

log = logging.getLogger("stillhouse.lifecycle")


class Controller:
    def __init__(
        self,
        config: Config,
        *,
        steps: Steps,
        routing: RoutingTable | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.steps = steps
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
            try:  # e.g. a sample of student answers and fallback disagreements, for people
                self.steps.after_tick(store, self.config)
            except Exception:
                log.exception("the work after the lifecycle's pass failed")
            if self.routing is not None:
                self.routing.publish({n: entry_of(s, store) for n, s in out.items()})
                self.routing.publish_intents(newest_models(store))
        return out

    def step(self, store: TraceStore, name: str) -> TaskState:
        task = self.config.tasks[name]
        state = events.current(store, name)
        mode = state.mode or task.mode
        if mode != "auto" or task.student is None or state.state is State.PAUSED:
            return state
        now = self.clock()
        new = HANDLERS[state.state](self, store, name, task, state, now)
        if new is None:
            return state
        recorded = events.record(store, new, previous=state.state)
        log.info("%s: %s -> %s: %s", name, state.label, recorded.label, recorded.reason)
        return recorded

    # -- one method per state: the next state, or None to stay ---------------------------------
    def _grace(
        self, store: TraceStore, name: str, task: TaskConfig, state: TaskState, now: float
    ) -> TaskState | None:
        if state.detail.get("collect_since") is None:
            ready = self.steps.readiness(store, self.config, now)[name]
            if not ready["ready"]:
                return None
            met = ", ".join(k for k, v in ready["met"].items() if v)
            return state.moved(State.CURATING, f"grace met: {met}", detail={})
        since = float(state.detail["collect_since"])
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
        return self._collected(store, name, task, state, now, f"since {stamp}")

    def _collected(
        self,
        store: TraceStore,
        name: str,
        task: TaskConfig,
        state: TaskState,
        now: float,
        when: str,
    ) -> TaskState | None:
        """After a failed gate or a rollback: curate again once `grace.min_conversations` new
        distinct examples arrived (or `grace.max_days` passed). The same messages again would
        only retell the dataset the candidate failed on."""
        since = float(state.detail.get("collect_since") or state.created_at)
        fresh = self.steps.new_examples(store, self.config, name, since)
        if fresh < task.grace.min_conversations and now - since < task.grace.max_days * 86400:
            return None
        failed_on = state.detail.get("dataset")
        return state.moved(
            State.CURATING,
            f"{fresh} new distinct examples {when}",
            detail={"failed_on": failed_on} if failed_on else {},
        )

    def _curating(
        self, store: TraceStore, name: str, task: TaskConfig, state: TaskState, now: float
    ) -> TaskState | None:
        dataset = self.steps.curate(store, self.config, name)
        if dataset == state.detail.get("failed_on"):
            return state.moved(
                State.GRACE,
                f"curated {dataset} again, the dataset the last candidate failed on: "
                "collecting new distinct examples",
                detail={"collect_since": now, "dataset": dataset},
            )
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
            return promote(task, state, candidate, verdict)
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
            return promote(task, state, candidate, verdict)
        checked = judged(verdict)
        reason = f"{candidate} failed the gate: {verdict.reason}"
        if incumbent is not None:  # a retrain that did not beat production: keep production
            return state.moved(
                State.SERVING,
                f"{reason}; {incumbent} keeps serving",
                detail={**state.detail["incumbent_detail"], "serving_since": now, **checked},
            )
        return state.moved(
            State.GRACE,
            f"{reason}; collecting new distinct examples",
            detail={"collect_since": now, "dataset": state.detail.get("dataset"), **checked},
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
            return rolled_back(state, reason, result.evidence, now)
        return next_stage(
            task, state, f"stage {state.share:.0%} passed: {result.reason}", result.evidence, now
        )

    def _serving(
        self, store: TraceStore, name: str, task: TaskConfig, state: TaskState, now: float
    ) -> TaskState | None:
        drift = check_drift(store, name, task, state.detail.get("dataset"), self.steps.cluster, now)
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
        return self._collected(store, name, task, state, now, "since the rollback")

    def _paused(
        self, store: TraceStore, name: str, task: TaskConfig, state: TaskState, now: float
    ) -> TaskState | None:
        return None  # a person froze it (step() does not even get here)

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


Handler = Callable[[Controller, TraceStore, str, TaskConfig, TaskState, float], TaskState | None]
# One handler per state, next to the transition table it follows (states.TRANSITIONS): each
# returns the next state, or None to stay.
HANDLERS: dict[State, Handler] = {
    State.GRACE: Controller._grace,
    State.CURATING: Controller._curating,
    State.OPTIMIZING: Controller._optimizing,
    State.TRAINING: Controller._training,
    State.VALIDATING: Controller._validating,
    State.ROLLOUT: Controller._rollout,
    State.SERVING: Controller._serving,
    State.RETRAINING: Controller._retraining,
    State.ROLLED_BACK: Controller._rolled_back,
    State.PAUSED: Controller._paused,
}
assert set(HANDLERS) == set(State), "every state has its handler"


@contextlib.contextmanager
def controller_lock(store_url: str) -> Iterator[bool]:
    """Yield True while this process holds the one controller lock of the store, else False."""
    with open_store(store_url, migrate=False) as store, store.controller_lock() as held:
        yield held

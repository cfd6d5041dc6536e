"""Safe student mode: `mode student` is refused until the student has served in auto mode for
`safe_student_after` without a failed gate. The lifecycle runs for real on loopback (the World of
tests/test_lifecycle.py: real curation, registry, routing, shadow comparisons and gates)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from stillhouse.errors import StillhouseError
from stillhouse.lifecycle import manual as ctl
from stillhouse.lifecycle.safety import stable_since
from stillhouse.lifecycle.states import State
from stillhouse.store import open_store

from .test_cli import run
from .test_lifecycle import World, roll_to_first_stage
from .test_lifecycle import world as world  # the fixture, re-exported


def _set_student(w: World, **kwargs: bool) -> None:
    with open_store(w.config.store.url) as store:
        ctl.set_mode(store, w.config, "support", "student", **kwargs)


def test_mode_student_waits_for_a_stable_period_and_says_when(world: World) -> None:
    w = world
    with pytest.raises(StillhouseError, match="not serving in auto mode yet"):
        _set_student(w)
    roll_to_first_stage(w)
    with open_store(w.config.store.url) as store:
        since = stable_since(store, "support")
        rows = store.query("SELECT MAX(created_at) FROM lifecycle_events WHERE state = 'rollout'")
        assert since == rows[0][0]
    allowed = dt.datetime.fromtimestamp(since + 14 * 86400, dt.UTC).strftime("%Y-%m-%d %H:%M")
    with pytest.raises(StillhouseError, match=f"allowed from {allowed} UTC"):
        _set_student(w)
    assert w.state().mode is None  # nothing stored
    _set_student(w, force=True)
    assert w.state().mode == "student"


def test_a_failed_gate_restarts_the_clock(world: World) -> None:
    w = world
    short = w.config.tasks["support"].model_copy(update={"safe_student_after": 0.5})
    w.config = w.config.model_copy(update={"tasks": {"support": short}})
    w.controller.config = w.config
    roll_to_first_stage(w)
    time.sleep(0.6)
    with open_store(w.config.store.url) as store:
        first = stable_since(store, "support")
        ctl.rollback(store, w.config, "support")  # a failed gate, as far as safety goes
        assert stable_since(store, "support") is None
    with pytest.raises(StillhouseError, match="not serving in auto mode yet"):
        _set_student(w)
    w.ask(8)
    assert [w.tick() for _ in range(5)][-1] is State.ROLLOUT  # a new candidate rolls out
    with open_store(w.config.store.url) as store:
        again = stable_since(store, "support")
    assert first is not None and again is not None and again > first
    with pytest.raises(StillhouseError, match="allowed from"):
        _set_student(w)
    time.sleep(0.6)
    _set_student(w)  # stable for the (short) period now
    assert w.state().mode == "student"


def test_the_cli_refuses_and_force_overrides(tmp_path: Path) -> None:
    (tmp_path / "stillhouse.toml").write_text(
        '[models.t]\nprovider = "openai"\nmodel = "x"\n'
        '[models.s]\nprovider = "openai"\nmodel = "y"\n'
        '[tasks.support]\nteacher = "t"\nstudent = "s"\nsafe_student_after = "7d"\n'
    )
    bad = run("mode", "--task", "support", "student", cwd=tmp_path, check=False)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: refused:") and "7 days" in bad.stderr
    assert "--force" in bad.stderr and "Traceback" not in bad.stderr
    run("mode", "--task", "support", "student", "--force", cwd=tmp_path)
    status = json.loads(run("status", "--json", cwd=tmp_path).stdout)["tasks"]["support"]
    assert status["mode"] == "student"


def test_each_failed_gate_restarts_the_clock_a_passed_one_does_not(tmp_path: Path) -> None:
    """The stored history alone decides: a retrain whose candidate passes keeps the clock; one
    whose candidate fails validation, or is withdrawn mid-rollout, restarts it."""
    from stillhouse.lifecycle import events
    from stillhouse.lifecycle.states import TaskState

    url = f"sqlite:///{tmp_path / 's.db'}"

    def move(state: State, share: float, candidate: str, reason: str = "test") -> float:
        with open_store(url) as store:
            now = events.current(store, "t")
            new = TaskState("t", state, share=share, candidate_id=candidate, reason=reason)
            return events.record(store, new, previous=now.state).created_at

    def since() -> float | None:
        with open_store(url) as store:
            return stable_since(store, "t")

    move(State.CURATING, 0, "")
    assert since() is None
    started = move(State.ROLLOUT, 0.1, "a")  # from validating, in real life
    move(State.SERVING, 1.0, "a")
    move(State.RETRAINING, 1.0, "a")
    move(State.VALIDATING, 1.0, "a")
    move(State.ROLLOUT, 0.1, "b")  # b passed its gate
    move(State.SERVING, 1.0, "b")
    assert since() == started
    move(State.RETRAINING, 1.0, "b")
    move(State.VALIDATING, 1.0, "b")
    failed = move(State.SERVING, 1.0, "b")  # c failed validation: b keeps serving
    assert since() == failed
    move(State.RETRAINING, 1.0, "b")
    move(State.VALIDATING, 1.0, "b")
    move(State.ROLLOUT, 0.1, "d")
    withdrawn = move(State.SERVING, 1.0, "b")  # d failed a stage: b serves on
    assert since() == withdrawn

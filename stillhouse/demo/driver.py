"""The demo's run: the real gateway (uvicorn on a free loopback port) with the real lifecycle
controller ticking in a background thread, as `stillhouse serve` runs them; simulated users send
the task's requests through it until the student serves (or the time budget is spent), then
the figures."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import load_config
from ..lifecycle import events
from ..lifecycle.states import State
from ..store import open_store
from .figures import figures
from .setup import BATCH, SCALED, TIER, Profile, prepare
from .story import story
from .tasks import TRIAGE, DemoTask
from .traffic import Reply, Users

WAITING = {State.CURATING, State.OPTIMIZING, State.TRAINING, State.VALIDATING, State.RETRAINING}
Say = Callable[[str], None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    """create_app + the controller thread, served by uvicorn in this process."""

    def __init__(self, config: Any) -> None:
        import uvicorn

        from ..gateway import create_app
        from ..worker import controller

        self.app = create_app(config)
        self.controller = controller(config, self.app.state.routing, progress=True)
        self.stop_ticks = threading.Event()
        self.port = _free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
            )
        )
        self.threads = [
            threading.Thread(target=self.server.run, name="demo-gateway", daemon=True),
            threading.Thread(
                target=self.controller.run,
                args=(self.stop_ticks,),
                name="stillhouse-lifecycle",
                daemon=True,
            ),
        ]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Gateway:
        self.threads[0].start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.threads[0].is_alive():
                raise RuntimeError("the demo gateway did not start")
            time.sleep(0.05)
        self.threads[1].start()
        return self

    def settle(self) -> None:
        """Let background shadow comparisons finish and every capture reach the store."""
        time.sleep(0.5)
        self.app.state.writer.flush(60)

    def stop(self) -> None:
        self.stop_ticks.set()
        self.server.should_exit = True
        for t in self.threads:
            t.join(30)


# Lifecycle ticks grace may sit unmoved after the last calls before the users send more.
STILL_WAITING = 10


def run(
    folder: Path,
    profile: Profile,
    *,
    say: Say = lambda _: None,
    teacher: str | None = None,
    student: str | None = None,
    train: dict[str, Any] | None = None,
    concurrency: int = BATCH,
    intents: int | None = None,
    engine: str = "torch",
    task: DemoTask = TRIAGE,
) -> dict[str, Any]:
    """Run the demo of `task` in `folder` (emptied first); the final figures. `intents`: how many
    of the task's intents the requests use (default the profile's, at most the task's)."""
    started = time.time()
    intents = task.labels_for(intents or profile.intents)
    name, noun = task.name, task.noun
    models = {k: v for k, v in (("teacher", teacher), ("student", student)) if v}
    path = prepare(
        folder,
        profile,
        train=train,
        intents=intents,
        engine=engine,
        task=task,
        **models,  # type: ignore[arg-type]
    )
    config = load_config(path)
    say(f"config: {path} (task {name}, profile {profile.name}, tier {TIER}: its gates untouched)")
    say("scaled down for a CPU: " + "; ".join(SCALED))
    gateway = Gateway(config).start()
    tick = config.lifecycle.tick
    say(f"gateway on {gateway.url} with the lifecycle controller ticking every {tick:g} s")
    users = Users(gateway.url, concurrency=concurrency, intents=intents, task=task)
    marks: dict[str, float] = {"grace": started}
    spans: list[tuple[float, str]] = [(started, State.GRACE.value)]  # every move, for the chart
    counter = {"n": 0}

    def done(reply: Reply) -> None:
        counter["n"] += 1
        if reply.error:
            say(f"  call {counter['n']}: error {reply.error}")
        elif counter["n"] % 8 == 0:
            say(f"  {counter['n']} calls answered (last by the {reply.route})")

    def current() -> Any:
        with open_store(config.store.url) as store:
            return events.current(store, name)

    def note(state: Any) -> None:
        label = state.label
        if spans[-1][1] != label:
            spans.append((time.time(), label))
            marks.setdefault(label, time.time())
            say(f"[{time.time() - started:6.0f} s] {label}: {state.reason}")

    try:
        say(f"grace: {profile.grace_calls} {noun} to the teacher ({config.tasks[name].teacher})")
        users.send(profile.grace_calls, done)
        gateway.settle()
        # a guard, not a target: the rest of the lifecycle gets this long after grace
        deadline = time.time() + profile.budget_s
        outcome = "budget spent"
        rounds, answered = 1, 0.0
        last_sent = time.time()
        while time.time() < deadline:
            state = current()
            note(state)
            if state.state in (State.SERVING,):
                say(f"serving: {profile.serving_calls} more {noun} for the 'after' figures")
                marks["after"] = time.time()
                users.send(profile.serving_calls, done)
                outcome = "serving"
                break
            if state.state is State.GRACE and len(spans) > 1 and state.created_at != answered:
                # the gate sent the candidate back: the controller waits for more teacher data
                if rounds >= profile.rounds:
                    outcome = f"stopped in grace: {state.reason}"
                    break
                rounds += 1
                answered = state.created_at
                say(f"round {rounds}: {profile.grace_calls} more {noun} to the teacher")
                users.send(profile.grace_calls, done)
                gateway.settle()
                last_sent = time.time()
                continue
            if state.state is State.GRACE and time.time() - last_sent > STILL_WAITING * tick:
                # grace still waits (after a failed gate, for requests unlike those already
                # trained on): the users keep coming, as real traffic would
                users.send(concurrency, done)
                gateway.settle()
                last_sent = time.time()
                continue
            if state.state is State.ROLLED_BACK:
                outcome = f"stopped in {state.state.value}: {state.reason}"
                break
            if state.state is State.ROLLOUT:
                users.send(concurrency, done)  # the stage's evidence: calls and shadows
                gateway.settle()
                continue
            time.sleep(0.5)
        gateway.settle()
        note(current())
    finally:
        gateway.stop()
    with open_store(config.store.url) as store:
        doc = figures(store, config, marks, name)
        doc["story"] = story(store, name, spans, started)
    doc.update(
        task=name,
        states=[label for _, label in spans],
        outcome=outcome,
        profile=profile.name,
        engine=engine,
        calls_sent=users.sent,
        rounds=rounds,
        wall_s=round(time.time() - started, 1),
        folder=str(folder),
    )
    return doc

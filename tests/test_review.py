"""Human review: a sample of student answers and every fallback disagreement are queued; a person
marks them right or wrong or corrects them (CLI, terminal loop, dashboard page in Chromium);
corrections become training data first-hand and verdicts feed the rollout gate. The lifecycle
runs for real on loopback (the World of tests/test_lifecycle.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from stillhouse import review
from stillhouse.curate.pipeline import curate
from stillhouse.gateway import create_app
from stillhouse.lifecycle.controller import Controller
from stillhouse.lifecycle.rollout import collect
from stillhouse.lifecycle.states import State
from stillhouse.store import open_store

from .test_cli import run
from .test_dashboard import FLAGS, _chromium
from .test_lifecycle import Student, World, roll_to_first_stage, teacher_reply
from .upstream import ServerThread, UpstreamBehaviour, running_upstream


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """The lifecycle's world with every student answer sampled for review and no shadow
    comparisons: the only agreement evidence the gate sees is a person's."""
    student = Student()
    server = ServerThread(student.app()).start()
    with running_upstream(UpstreamBehaviour(reply=teacher_reply)) as (teacher_url, _):
        w = World(tmp_path, teacher_url, server.url + "/v1")
        task = w.config.tasks["support"]
        task = task.model_copy(
            update={
                "review": task.review.model_copy(update={"rate": 1.0}),
                "routing": task.routing.model_copy(update={"shadow_rate": 0.0}),
            }
        )
        w.config = w.config.model_copy(update={"tasks": {"support": task}})
        w.server.stop()  # a gateway and a controller on the new config
        w.controller = Controller(w.config, steps=w.steps, routing=w.table)
        w.app = create_app(w.config, routing=w.table)
        w.server = ServerThread(w.app).start()
        w.client = openai.OpenAI(base_url=w.server.url + "/v1", api_key="x", max_retries=0)

        def settle() -> None:  # no shadow comparisons to wait for: only the captures
            assert w.app.state.writer.flush(10)

        w.settle = settle  # type: ignore[method-assign]
        w.student = student  # type: ignore[attr-defined]
        (tmp_path / "stillhouse.toml").write_text(
            f'[store]\nurl = "{w.config.store.url}"\n'
            f'[models.teacher]\nprovider = "openai-compatible"\nbase_url = "{teacher_url}"\n'
            'model = "big"\n'
            f'[models.student]\nprovider = "openai-compatible"\nbase_url = "{server.url}/v1"\n'
            'model = "small"\n'
            '[tasks.support]\nteacher = "teacher"\nstudent = "student"\n'
            "[tasks.support.review]\nrate = 1.0\n"
        )
        yield w
        w.stop()
    server.stop()


def test_the_sample_rate_is_honoured() -> None:
    ids = [f"call_{i}" for i in range(4000)]
    share = sum(review.sampled(0.25, i) for i in ids) / len(ids)
    assert 0.22 < share < 0.28
    assert not any(review.sampled(0.0, i) for i in ids)
    assert review.sampled(0.25, "call_7") == review.sampled(0.25, "call_7")


def _queue(w: World) -> list[review.ReviewItem]:
    with open_store(w.config.store.url) as store:
        review.enqueue(store, w.config)
        return review.items(store, "support", limit=1000)


def test_samples_and_fallback_disagreements_are_queued_and_marked(
    world: World, tmp_path: Path
) -> None:
    w = world
    roll_to_first_stage(w)
    student = w.student  # type: ignore[attr-defined]
    student.confidence, student.wrong = 0.2, True  # unsure and wrong: fallbacks that disagree
    disagreeing = [r for r in w.ask(24) if r.headers["x-stillhouse-route"] == "fallback"]
    student.wrong = False  # unsure but right: fallbacks that agree are not queued
    agreeing = [r for r in w.ask(24) if r.headers["x-stillhouse-route"] == "fallback"]
    student.confidence = 0.9  # sure and right: served, and sampled at rate 1.0
    served = [r for r in w.ask(24) if r.headers["x-stillhouse-route"] == "student"]
    assert disagreeing and agreeing and served
    queued = _queue(w)
    with open_store(w.config.store.url) as store:
        calls = {c.id: c for c in store.list_calls("support", 10_000)}
    reasons = {calls[i.call_id].route_reason: i.reason for i in queued}
    fallback_ids = {i.call_id for i in queued if i.reason == "fallback"}
    sample_ids = {i.call_id for i in queued if i.reason == "sample"}
    replaced = {r.headers["x-stillhouse-call-id"] for r in disagreeing}  # the student calls
    assert fallback_ids == replaced and reasons["fallback:replaced"] == "fallback"
    agreed = {r.headers["x-stillhouse-call-id"] for r in agreeing}
    assert not agreed & {i.call_id for i in queued}
    assert {r.headers["x-stillhouse-call-id"] for r in served} <= sample_ids
    assert len(_queue(w)) == len(queued)  # scanning again queues nothing twice

    listed = json.loads(run("review", "--json", cwd=tmp_path).stdout)["items"]
    assert {d["id"] for d in listed} == {i.id for i in queued[:50]}
    fallback = next(d for d in listed if d["reason"] == "fallback")
    assert json.loads(fallback["answer"])["intent"] == "wrong"
    assert json.loads(fallback["teacher_answer"])["intent"] != "wrong"

    fix = run(
        "review",
        "mark",
        fallback["id"],
        "--verdict",
        "wrong",
        "--correction",
        '{"intent": "fixed"}',
        cwd=tmp_path,
    )
    assert fix.stdout.strip() == f"{fallback['id']}: corrected"
    again = run("review", "mark", fallback["id"], "--verdict", "right", cwd=tmp_path, check=False)
    assert again.returncode == 1 and "already marked corrected" in again.stderr
    bad = run("review", "mark", "rev_nope", "--verdict", "right", cwd=tmp_path, check=False)
    assert bad.returncode == 1 and "no review item" in bad.stderr
    both = run(
        "review",
        "mark",
        listed[1]["id"],
        "--verdict",
        "right",
        "--correction",
        "x",
        cwd=tmp_path,
        check=False,
    )
    assert both.returncode == 1 and "--verdict wrong" in both.stderr

    # the terminal loop: right, wrong, correct (with its text), then quit
    loop = subprocess.run(
        [sys.executable, "-m", "stillhouse", "review", "--task", "support"],
        cwd=tmp_path,
        input='r\nw\nc\n{"intent": "typed"}\nq\n',
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert loop.returncode == 0, loop.stderr
    assert "3 marked" in loop.stdout and "answer:" in loop.stdout
    with open_store(w.config.store.url) as store:
        done = review.items(store, "support", status=None, limit=1000)
        statuses = sorted(i.status for i in done if i.status != "pending")
        assert statuses == ["corrected", "corrected", "right", "wrong"]
        corrected = review.get(store, fallback["id"])
        assert corrected is not None and corrected.reviewed_at is not None
        scores = {(s.name, s.value, s.source) for s in store.scores_for(fallback["call_id"])}
        assert ("review", 0.0, "review") in scores and ("shadow_agreement", 0.0, "review") in scores

        # corrections are training data first-hand, the replaced teacher answer gives way
        report = curate(store, w.config, "support")
        examples = store.dataset_examples(report.dataset.id, "train")
    fixed = [e for e in examples if e.example["messages"][-1]["content"] == '{"intent": "fixed"}']
    typed = [e for e in examples if e.example["messages"][-1]["content"] == '{"intent": "typed"}']
    assert len(fixed) == len(typed) == 2  # review.correction_weight
    assert {e.call_id for e in fixed} == {fallback["call_id"]}
    assert report.dataset.removed["corrected"] >= 1
    assert fallback["call_id"] in report.dataset.config["corrections"]
    teacher_for_fixed = [
        c.id for c in calls.values() if c.metadata.get("fallback_of") == fallback["call_id"]
    ]
    assert not {e.call_id for e in examples} & set(teacher_for_fixed)


def test_reviewed_verdicts_feed_the_rollout_gate(world: World) -> None:
    w = world
    roll_to_first_stage(w)
    since = w.state().created_at
    served = [r for r in w.ask(40) if r.headers["x-stillhouse-route"] == "student"]
    assert len(served) >= 4
    assert w.tick() is State.ROLLOUT  # no agreement evidence at all: the gate waits
    with open_store(w.config.store.url) as store:
        assert collect(store, "support", since).shadow == []
        for item in review.items(store, "support", limit=1000):
            review.mark(store, item.id, "wrong")  # a person disagrees with every answer
        assert collect(store, "support", since).shadow == [0.0] * len(served)
    assert w.tick() is State.ROLLED_BACK
    assert "shadow agreement" in w.state().reason


def test_the_review_page_in_chromium(world: World) -> None:
    from playwright.sync_api import sync_playwright

    w = world
    roll_to_first_stage(w)
    served = [r for r in w.ask(16) if r.headers["x-stillhouse-route"] == "student"]
    assert len(served) >= 2
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), headless=True, args=FLAGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(w.server.url + "/review")
        items = page.locator("div.review")
        assert items.count() == len(served)
        first, second = items.nth(0), items.nth(1)
        first_id = first.get_attribute("id").removeprefix("item-")  # type: ignore[union-attr]
        second_id = second.get_attribute("id").removeprefix("item-")  # type: ignore[union-attr]
        first.locator("button[value=right]").click()
        page.wait_for_url("**/review?done=*")
        assert page.locator("#done").inner_text() == f"{first_id}: right"
        assert page.locator("div.review").count() == len(served) - 1
        box = page.locator(f"#item-{second_id}")
        box.locator("input[name=correction]").fill('{"intent": "by hand"}')
        box.locator("button[value=correct]").click()
        page.wait_for_url("**/review?done=*")
        assert page.locator("#done").inner_text() == f"{second_id}: corrected"
        assert "review" in page.locator("header").inner_text()
        browser.close()
    assert not errors
    with open_store(w.config.store.url) as store:
        second_item = review.get(store, second_id)
        assert second_item is not None and second_item.correction == '{"intent": "by hand"}'
        assert second_item.reviewer == "dashboard"


def _answer(text: str) -> dict[str, object]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


def test_the_queue_on_both_stores(store_url: str, tmp_path: Path) -> None:
    from stillhouse.config import parse_config
    from stillhouse.store.records import Call

    config = parse_config(
        {
            "store": {"url": store_url},
            "models": {"t": {"provider": "openai", "model": "x"}},
            "tasks": {"support": {"teacher": "t", "review": {"rate": 1.0}}},
        },
        tmp_path,
    )
    ask = {"messages": [{"role": "user", "content": "where is my parcel"}]}
    calls = [
        Call(
            "call_s", "support", ask, "student", route_reason="rollout:50%", response=_answer("a")
        ),
        Call(
            "call_f",
            "support",
            ask,
            "student",
            route_reason="fallback:replaced",
            response=_answer("b"),
        ),
        Call(
            "call_t",
            "support",
            ask,
            "teacher",
            route_reason="fallback",
            response=_answer("c"),
            metadata={"fallback_of": "call_f"},
        ),
        Call("call_x", "support", ask, "teacher", route_reason="grace", response=_answer("d")),
    ]
    with open_store(store_url) as store:
        store.insert_calls(calls)
        assert review.enqueue(store, config) == 2
        review.enqueue(store, config)  # idempotent
        queued = {i.call_id: i for i in review.items(store)}
        assert {k: i.reason for k, i in queued.items()} == {
            "call_s": "sample",
            "call_f": "fallback",
        }
        assert review.show(store, queued["call_f"])["teacher_answer"] == "c"
        review.mark(store, queued["call_s"].id, "right", reviewer="ann")
        review.mark(store, queued["call_f"].id, "wrong", "the right answer")
        assert [i.call_id for i in review.items(store)] == []
        fixed = review.corrections(store, "support")
        assert [(c.id, text) for c, text in fixed] == [("call_f", "the right answer")]

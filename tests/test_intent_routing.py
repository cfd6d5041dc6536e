"""Per-intent routing: the snapshot's intent model tells a live request's intent in the gateway
(metadata.intent wins), `routing.teacher_intents` always go to the teacher, `student_intents` to
the student at full share from the first stage, and the report and dashboard break traffic and
agreement down by intent. The lifecycle runs for real on loopback (tests/test_lifecycle.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from stillhouse.config import parse_config
from stillhouse.curate import intent_model
from stillhouse.errors import ConfigError
from stillhouse.gateway import create_app
from stillhouse.intents import IntentModel
from stillhouse.lifecycle.controller import Controller
from stillhouse.store import open_store

from .test_cli import run
from .test_lifecycle import World, roll_to_first_stage
from .test_lifecycle import world as world  # the fixture, re-exported
from .upstream import ServerThread

WORDS = {
    "refund": "refund my money back for the order",
    "delivery": "where is my parcel delivery tracking",
    "card_lost": "lost card stolen block it",
    "cancel": "cancel subscription stop plan",
}


def test_the_intent_model_predicts_and_round_trips() -> None:
    texts, labels = [], []
    for intent, words in WORDS.items():
        for i in range(5):
            texts.append(f"{words} please {i}")
            labels.append(intent)
    model = intent_model.fit(texts, labels)
    assert model is not None
    again = IntentModel.from_json(json.loads(json.dumps(model.to_json())))
    assert again.predict("I want my money back, a refund") == "refund"
    assert again.predict("my card was stolen") == "card_lost"
    assert again.predict("zzz qqq") is None
    assert intent_model.fit(texts, ["one"] * len(texts)) is None


def test_an_intent_in_both_lists_is_an_error() -> None:
    with pytest.raises(ConfigError, match="both teacher_intents and student_intents"):
        parse_config(
            {
                "models": {"t": {"provider": "openai", "model": "x"}},
                "tasks": {
                    "a": {
                        "teacher": "t",
                        "routing": {"teacher_intents": ["x"], "student_intents": ["x"]},
                    }
                },
            }
        )


def _with_rules(w: World) -> None:
    """Serve the world's task with routing rules: a gateway and a controller on the new config."""
    task = w.config.tasks["support"]
    routing = task.routing.model_copy(
        update={"teacher_intents": ["refund"], "student_intents": ["cancel"]}
    )
    w.config = w.config.model_copy(
        update={"tasks": {"support": task.model_copy(update={"routing": routing})}}
    )
    w.server.stop()
    w.controller = Controller(w.config, steps=w.steps, routing=w.table)
    w.app = create_app(w.config, routing=w.table)
    w.server = ServerThread(w.app).start()
    w.client = openai.OpenAI(base_url=w.server.url + "/v1", api_key="x", max_retries=0)


def _ask(client: openai.OpenAI, intent: str, n: int, start: int, **extra: Any) -> list[Any]:
    return [
        client.chat.completions.with_raw_response.create(
            model="support",
            messages=[{"role": "user", "content": f"{intent} request {start + i}"}],
            user=f"person-{intent}-{start + i}",
            **extra,
        )
        for i in range(n)
    ]


def test_rules_route_by_the_intent_the_gateway_tells(world: World) -> None:
    w = world
    _with_rules(w)
    roll_to_first_stage(w)  # curated (with its intent model), 25% on the student
    assert w.state().share == 0.25
    refunds = _ask(w.client, "refund", 16, 100)
    cancels = _ask(w.client, "cancel", 16, 200)
    deliveries = _ask(w.client, "delivery", 24, 300)
    w.settle()
    assert {r.headers["x-stillhouse-intent"] for r in refunds} == {"refund"}
    assert {r.headers["x-stillhouse-route"] for r in refunds} == {"teacher"}
    assert {r.headers["x-stillhouse-intent"] for r in cancels} == {"cancel"}
    assert {r.headers["x-stillhouse-route"] for r in cancels} == {"student"}
    routes = [r.headers["x-stillhouse-route"] for r in deliveries]
    assert 0 < routes.count("student") < len(routes)  # the share still applies
    # the caller's metadata.intent wins over the model
    told = _ask(w.client, "refund", 4, 400, metadata={"intent": "cancel"})
    assert {r.headers["x-stillhouse-route"] for r in told} == {"student"}
    with open_store(w.config.store.url) as store:
        call = store.get_call(cancels[0].headers["x-stillhouse-call-id"])
        assert call is not None and call.route_reason == "intent:student"
        assert call.metadata["routed_intent"] == "cancel" and "intent" not in call.metadata
        refund = store.get_call(refunds[0].headers["x-stillhouse-call-id"])
        assert refund is not None and refund.metadata["routed_intent"] == "refund"
    # the report and the dashboard break traffic and agreement down by intent
    (Path(w.config.store.url.removeprefix("sqlite:///")).parent / "stillhouse.toml").write_text(
        f'[store]\nurl = "{w.config.store.url}"\n'
        '[models.t]\nprovider = "openai"\nmodel = "x"\n[tasks.support]\nteacher = "t"\n'
    )
    folder = Path(w.config.store.url.removeprefix("sqlite:///")).parent
    doc = json.loads(run("report", "--json", cwd=folder).stdout)["tasks"]["support"]["intents"]
    assert doc["refund"]["student_share"] == 0 and doc["refund"]["requests"] >= 16
    assert doc["cancel"]["student"] == 16 + 4  # every cancel since the rollout began
    assert doc["cancel"]["agreement"] == 1.0 and doc["cancel"]["agreement_samples"] >= 16
    assert 0 < doc["delivery"]["student_share"] < 1
    html = httpx.get(w.server.url + "/tasks/support").text
    assert 'id="intents"' in html and "cancel" in html and "refund" in html


def test_a_gateway_of_its_own_loads_the_intent_model_in_the_background(world: World) -> None:
    w = world
    _with_rules(w)
    roll_to_first_stage(w)
    config = w.config.model_copy(
        update={"lifecycle": w.config.lifecycle.model_copy(update={"refresh": 0.05})}
    )
    gateway = ServerThread(create_app(config)).start()  # its own table and refresher
    try:
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
        deadline = time.monotonic() + 5
        while True:
            reply = _ask(client, "cancel", 1, int(time.monotonic() * 1000))[0]
            if reply.headers.get("x-stillhouse-intent") == "cancel":
                break
            assert time.monotonic() < deadline, "the gateway never loaded the intent model"
            time.sleep(0.05)
        assert reply.headers["x-stillhouse-route"] == "student"
        assert _ask(client, "refund", 1, 1)[0].headers["x-stillhouse-route"] == "teacher"
    finally:
        gateway.stop()

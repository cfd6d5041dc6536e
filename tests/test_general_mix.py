"""The forgetting guard: a general set (the packaged Chit-Chat corpus, or a file the user points
at) answered by the teacher on loopback and captured; curation mixes a share of it into the
training split and holds the rest out; evaluation reports the student's general agreement next
to a baseline's, and the gate can refuse a candidate whose general agreement fell (real tiny
models from tests/models.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from stillhouse.config import load_config
from stillhouse.curate.pipeline import curate
from stillhouse.evaluate.gate import Rules, decide
from stillhouse.general import corpus_prompts
from stillhouse.store import open_store

from .models import INTENTS, answer, chat_examples, register_tiny_candidate, seed_intent_calls
from .test_cli import run
from .upstream import UpstreamBehaviour, message_text, running_upstream


def intent_reply(body: dict[str, Any]) -> str:
    """A deterministic teacher: the intent whose phrase the request contains, else small talk."""
    text = message_text([m for m in body["messages"] if m["role"] == "user"][-1])
    for intent, phrases in INTENTS.items():
        if any(p in text for p in phrases):
            return answer(intent)
    return "Nice to meet you! " + text[:20]


@pytest.fixture
def teacher() -> Iterator[tuple[str, UpstreamBehaviour]]:
    with running_upstream(UpstreamBehaviour(reply=intent_reply)) as up:
        yield up


def _workspace(folder: Path, teacher_url: str, extra: str = "", student: str = "") -> Any:
    url = f"sqlite:///{folder / 'store.db'}"
    (folder / "stillhouse.toml").write_text(
        f'[store]\nurl = "{url}"\n'
        f'[models.t]\nprovider = "openai-compatible"\nbase_url = "{teacher_url}"\n'
        'model = "big"\nmax_retries = 0\n'
        + (f'[models.s]\nprovider = "local"\nmodel = "{student}"\n' if student else "")
        + '[tasks.support]\nteacher = "t"\n'
        + ('student = "s"\n' if student else "")
        # The requests come from one small template (greeting, phrase, number), so at the default
        # settings they are near-duplicates and retellings of each other, and the general prompts
        # (from the same template, so the tiny student knows them) retell task rows.
        + "[tasks.support.curate]\ndedupe_threshold = 1.0\ngroup_similarity = 1.0\nholdout = 0.25\n"
        + extra
    )
    return SimpleNamespace(folder=folder, url=url, config=load_config(folder / "stillhouse.toml"))


def test_the_packaged_corpus_gives_seeded_prompts() -> None:
    first = corpus_prompts(20, seed=0)
    assert len(first) == len(set(first)) == 20
    assert first == corpus_prompts(20, seed=0) and first != corpus_prompts(20, seed=1)
    assert all(8 <= len(p) <= 300 for p in first)


def test_the_general_set_is_answered_by_the_teacher_and_captured(
    tmp_path: Path, teacher: tuple[str, UpstreamBehaviour]
) -> None:
    url, behaviour = teacher
    w = _workspace(tmp_path, url)
    doc = json.loads(
        run("general", "--task", "support", "--count", "12", "--json", cwd=w.folder).stdout
    )
    assert doc == {
        "task": "general:support",
        "prompts": 12,
        "answered_before": 0,
        "answered": 12,
        "errors": 0,
    }
    assert len(behaviour.requests) == 12
    again = json.loads(
        run("general", "--task", "support", "--count", "12", "--json", cwd=w.folder).stdout
    )
    assert again["answered_before"] == 12 and again["answered"] == 0
    assert len(behaviour.requests) == 12  # nothing asked twice
    with open_store(w.url) as store:
        calls = store.calls_for_task("general:support")
        assert store.calls_for_task("support") == []  # not the task's own traffic
    assert len(calls) == 12
    assert {(c.role, c.route_reason, c.metadata["general"]) for c in calls} == {
        ("teacher", "general", "support")
    }
    assert all(c.response and c.latency_ms for c in calls)
    status = json.loads(run("status", "--json", cwd=w.folder).stdout)["tasks"]["support"]
    assert status["calls"] == 0 and status["grace"]["conversations"] == 0
    bad = run("general", "--task", "nope", cwd=w.folder, check=False)
    assert bad.returncode == 1 and "unknown task 'nope'" in bad.stderr


def _prompt_file(folder: Path, n: int, seed: int) -> Path:
    path = folder / "general.jsonl"
    lines = [json.dumps({"prompt": e["messages"][0]["content"]}) for e in chat_examples(n, seed)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_curation_mixes_a_share_in_and_holds_the_rest_out(
    tmp_path: Path, teacher: tuple[str, UpstreamBehaviour]
) -> None:
    url, _ = teacher
    _prompt_file(tmp_path, 60, seed=5)
    w = _workspace(
        tmp_path, url, '[tasks.support.general]\nprompts = "general.jsonl"\nshare = 0.2\n'
    )
    seed_intent_calls(w.url, 120, seed=3)
    run("general", "--task", "support", cwd=w.folder)
    with open_store(w.url) as store:
        report = curate(store, w.config, "support")
        rows = store.dataset_examples(report.dataset.id)
    general = {c.id for c in store_calls(w.url, "general:support")}
    train = [e for e in rows if e.split == "train"]
    mixed = [e for e in train if e.call_id in general]
    task_train = len(train) - len(mixed)
    assert len(mixed) == round(0.2 / 0.8 * task_train) and {e.intent for e in mixed} == {"general"}
    held = [e for e in rows if e.split == "general"]
    assert (
        held
        and {e.call_id for e in held} <= general
        and not {e.call_id for e in held} & {e.call_id for e in mixed}
    )
    assert all(e.call_id not in general for e in rows if e.split == "holdout")
    info = report.dataset.config["general"]
    assert info["train"] == len(mixed) and info["holdout"] == len(held) and info["share"] == 0.2
    assert report.dataset.train_count == len(train)


def store_calls(url: str, task: str) -> list[Any]:
    with open_store(url) as store:
        return store.calls_for_task(task)


def test_the_gate_keeps_general_agreement_from_falling() -> None:
    rules = Rules(agreement=0.5, general_max_drop=0.05)
    common = {"n": 40, "agreement_ci": (0.9, 1.0), "format_compliance": 1.0, "p95_ms": 10.0}
    assert decide(rules, **common, general=(0.80, 0.82)).passed
    fell = decide(rules, **common, general=(0.70, 0.82))
    assert not fell.passed and "general agreement 0.700 vs baseline 0.820" in fell.reason
    assert not decide(rules, **common, general=None).passed  # required, and nothing to judge
    assert decide(Rules(agreement=0.5), **common, general=None).passed  # not required


def test_eval_reports_general_agreement_and_the_gate_refuses_forgetting(
    tmp_path: Path, teacher: tuple[str, UpstreamBehaviour], tiny_base: Path, trained: Any
) -> None:
    from stillhouse.evaluate.run import evaluate

    url, _ = teacher
    _prompt_file(tmp_path, 40, seed=9)  # general prompts the trained student happens to know
    w = _workspace(
        tmp_path,
        url,
        '[tasks.support.general]\nprompts = "general.jsonl"\nshare = 0.1\nholdout = 0.5\n'
        '[tasks.support.gate]\nmetric = "json"\nagreement = 0.6\ngeneral_max_drop = 0.05\n',
        student=str(tiny_base),
    )
    seed_intent_calls(w.url, 80, seed=11)
    run("general", "--task", "support", cwd=w.folder)
    with open_store(w.url) as store:
        ds = curate(store, w.config, "support").dataset

        def register(name: str, adapter: Path | None) -> str:
            return register_tiny_candidate(
                store, ds.id, tiny_base, name, adapter, tmp_path / "runs" / name
            )

        good, base = register("good", trained.adapter_dir), register("base", None)
        kept = evaluate(store, w.config, "support", good, incumbent=None, progress=False)
        forgot = evaluate(store, w.config, "support", base, incumbent=good, progress=False)
    g = kept["general"]
    assert g["n"] == ds.config["general"]["holdout"] >= 15
    assert kept["general_agreement"] == g["agreement"] >= 0.8
    assert g["baseline"] < 0.2 and "base, no adapter" in g["baseline_of"]  # the bare base model
    assert {c["name"]: c["passed"] for c in kept["gate"]["checks"]}["general"] is True
    assert forgot["general"]["baseline_of"] == good and forgot["general_agreement"] < 0.2
    checks = {c["name"]: c for c in forgot["gate"]["checks"]}
    assert checks["general"]["passed"] is False and forgot["passed"] is False
    assert "general agreement" in checks["general"]["detail"]

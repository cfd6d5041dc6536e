"""The remote training backend against the fine-tuning API fake (tests/fake_openai_finetune.py,
a real HTTP server): OpenAI and Azure clients from the official SDK, a finished job, a failed
job, a cancelled job, and `stillhouse train --backend openai` registering the fine-tuned model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from stillhouse.config import ModelConfig
from stillhouse.store import open_store
from stillhouse.train.config import TrainSettings
from stillhouse.train.remote import FineTuneFailed, fine_tune, make_client, serving_model

from .fake_openai_finetune import API_KEY, FakeFineTuning, running_fake
from .test_cli import run
from .test_train import chat_examples, seed_intent_calls

BASE = "gpt-4.1-mini-2025-04-14"
SETTINGS = TrainSettings(backend="openai", base_model=BASE, suffix="support", poll_interval=0.01)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, FakeFineTuning]]:
    monkeypatch.setenv("FAKE_FT_KEY", API_KEY)
    with running_fake() as served:
        yield served


def write_jsonl(path: Path, examples: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return path


def account(backend: str, url: str) -> ModelConfig:
    if backend == "azure":
        return ModelConfig(
            provider="azure", model="gpt-4.1-mini", base_url=url, api_key="env::FAKE_FT_KEY"
        )
    return ModelConfig(
        provider="openai", model=BASE, base_url=url + "/v1", api_key="env::FAKE_FT_KEY"
    )


@pytest.mark.parametrize("backend", ["openai", "azure"])
def test_a_job_runs_to_a_fine_tuned_model(
    fake: tuple[str, FakeFineTuning], tmp_path: Path, backend: str
) -> None:
    url, state = fake
    train = write_jsonl(tmp_path / "train.jsonl", chat_examples(24, seed=1))
    holdout = write_jsonl(tmp_path / "holdout.jsonl", chat_examples(6, seed=2))
    logged: list[str] = []
    result = fine_tune(
        make_client(backend, account(backend, url)),
        backend,
        train,
        holdout,
        SETTINGS.replace(backend=backend, epochs=2, batch_size=4),
        log=logged.append,
        sleep=lambda _s: None,
    )
    assert result.status == "succeeded"
    assert result.fine_tuned_model.startswith(f"ft:{BASE}:org-fake:support:")
    assert result.train_loss == pytest.approx(1 / 3)  # the last metrics event
    assert result.trained_tokens and result.trained_tokens > 0
    job = state.jobs[result.job_id]
    assert job["hyperparameters"]["n_epochs"] == 2 and job["hyperparameters"]["batch_size"] == 4
    assert job["validation_file"] == result.validation_file
    assert state.contents[result.training_file] == train.read_bytes()  # uploaded as written
    assert any("successfully completed" in line for line in logged)
    assert len(result.events) == len(set(result.events))  # each event reported once
    prefix = "/openai" if backend == "azure" else "/v1"
    assert (("POST", f"{prefix}/files")) in state.requests
    served = serving_model(backend, account(backend, url), result.fine_tuned_model)
    assert served["provider"] == backend and served["api_key"] == "env::FAKE_FT_KEY"
    ModelConfig.model_validate(served)  # a valid [models.x] table


def test_a_failed_job_raises_with_the_providers_reason(
    fake: tuple[str, FakeFineTuning], tmp_path: Path
) -> None:
    url, state = fake
    train = write_jsonl(tmp_path / "train.jsonl", chat_examples(4, seed=1))  # too few
    with pytest.raises(FineTuneFailed, match=r"failed: invalid_training_file: .* at least 10") as e:
        fine_tune(
            make_client("openai", account("openai", url)),
            "openai",
            train,
            None,
            SETTINGS,
            sleep=lambda _s: None,
        )
    assert state.jobs[e.value.job_id]["status"] == "failed"


def test_a_cancelled_job_raises(fake: tuple[str, FakeFineTuning], tmp_path: Path) -> None:
    url, state = fake
    state.cancel_while_running = True
    train = write_jsonl(tmp_path / "train.jsonl", chat_examples(12, seed=1))
    with pytest.raises(FineTuneFailed, match="was cancelled"):
        fine_tune(
            make_client("openai", account("openai", url)),
            "openai",
            train,
            None,
            SETTINGS,
            sleep=lambda _s: None,
        )


def test_polling_backs_off_exponentially(fake: tuple[str, FakeFineTuning], tmp_path: Path) -> None:
    url, _ = fake
    waits: list[float] = []
    train = write_jsonl(tmp_path / "train.jsonl", chat_examples(12, seed=1))
    fine_tune(
        make_client("openai", account("openai", url)),
        "openai",
        train,
        None,
        SETTINGS.replace(poll_interval=1.0),
        sleep=waits.append,
    )
    assert waits == [1.0, 2.0, 4.0]  # validating -> queued -> running -> succeeded


def test_a_bad_key_is_a_clear_error(fake: tuple[str, FakeFineTuning], tmp_path: Path) -> None:
    import openai

    url, _ = fake
    bad = ModelConfig(provider="openai", model=BASE, base_url=url + "/v1", api_key="sk-wrong")
    train = write_jsonl(tmp_path / "train.jsonl", chat_examples(12, seed=1))
    with pytest.raises(openai.AuthenticationError):
        fine_tune(make_client("openai", bad), "openai", train, None, SETTINGS)


def write_remote_config(tmp_path: Path, store_url: str, url: str) -> None:
    (tmp_path / "stillhouse.toml").write_text(
        f'[store]\nurl = "{store_url}"\n'
        '[models.t]\nprovider = "openai"\nmodel = "gpt-4.1"\n'
        f'base_url = "{url}/v1"\napi_key = "env::FAKE_FT_KEY"\n'
        '[tasks.support]\nteacher = "t"\n'
        "[tasks.support.curate]\ndedupe_threshold = 1.0\n"
        f'[tasks.support.train]\nbase_model = "{BASE}"\nsuffix = "support"\n'
        "poll_interval = 0.01\n"
    )


def test_train_command_registers_the_fine_tuned_model(
    fake: tuple[str, FakeFineTuning], tmp_path: Path, store_url: str
) -> None:
    url, state = fake
    seed_intent_calls(store_url, 40)
    write_remote_config(tmp_path, store_url, url)
    env = {"FAKE_FT_KEY": API_KEY, "STILLHOUSE_HOME": str(tmp_path / "home")}
    out = run("train", "--task", "support", "--backend", "openai", "--json", cwd=tmp_path, env=env)
    doc = json.loads(out.stdout)
    assert doc["backend"] == "openai" and doc["curated"] is True
    assert doc["serving"]["model"] == state.jobs[doc["artifacts"]["job_id"]]["fine_tuned_model"]
    assert API_KEY not in out.stdout + out.stderr  # keys stay references
    with open_store(store_url) as store:
        cand = store.get_candidate(doc["candidate"])
    assert cand is not None and cand.artifacts["fine_tuned_model"] == doc["serving"]["model"]


def test_train_command_fails_cleanly_on_a_failed_job(
    fake: tuple[str, FakeFineTuning], tmp_path: Path
) -> None:
    url, _ = fake
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    seed_intent_calls(store_url, 6)  # fewer than the provider's minimum
    write_remote_config(tmp_path, store_url, url)
    env = {"FAKE_FT_KEY": API_KEY, "STILLHOUSE_HOME": str(tmp_path / "home")}
    out = run(
        "train", "--task", "support", "--backend", "openai", cwd=tmp_path, env=env, check=False
    )
    assert out.returncode == 1
    assert "failed: invalid_training_file" in out.stderr and "Traceback" not in out.stderr
    with open_store(store_url) as store:
        assert store.list_candidates() == []  # nothing registered for a failed job


def test_the_uploaded_file_trains_on_the_answer_only() -> None:
    from stillhouse.curate.snapshot import answer_only

    example = {
        "messages": [
            {"role": "user", "content": "lost my card"},
            {
                "role": "assistant",
                "content": "Could you tell me more?",
            },  # the app's, not the teacher's
            {"role": "user", "content": "it was stolen"},
            {"role": "assistant", "content": '{"intent": "card_stolen"}'},
        ]
    }
    weighted = answer_only(example)["messages"]
    assert [m.get("weight") for m in weighted] == [None, 0, None, None]
    assert [m["content"] for m in weighted] == [m["content"] for m in example["messages"]]
    assert "weight" not in example["messages"][1]  # the stored example is left as it was

"""The OpenAI files and fine-tuning API served by the gateway, through the official `openai` SDK on
loopback: a chat JSONL uploaded, a job trained for real (a LoRA on the tiny Llama of
tests/models.py, seconds), its fine_tuned_model answering chat with what it was taught; bad input
refused in OpenAI's shapes with nothing stored; listing, events, cancelling, keys; and the store's
rows on SQLite and PostgreSQL."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from stillhouse.openai.fine_tuning import MIN_EXAMPLES, TERMINAL
from stillhouse.store import open_store
from stillhouse.store.records import FineTuningJob, JobEvent, UploadedFile, new_id

from .conftest import make_config

ANSWER = '{"intent": "refund"}'  # what every training example answers
UNUSED = "http://127.0.0.1:9/v1"  # the task's upstream teacher, never asked here
KEY = "sk-gateway-test"


def jsonl(records: list[Any]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in records) + b"\n"


def examples(n: int, answer: str = ANSWER) -> list[dict[str, Any]]:
    topics = ["my card", "a parcel", "the refund", "my plan", "the invoice", "a payment"]
    return [
        {
            "messages": [
                {"role": "system", "content": "Label the request."},
                {"role": "user", "content": f"hello, about {topics[i % len(topics)]} {i}"},
                {"role": "assistant", "content": answer},
            ]
        }
        for i in range(n)
    ]


@pytest.fixture
def start(tmp_path: Path, tiny_base: Path, gateway_factory: Any, monkeypatch: Any) -> Any:
    """A gateway with the tiny local model `tiny` (the task `support`'s teacher) and an
    OpenAI-compatible model `remote`, on `store_url` (default SQLite); (gateway, client)."""
    monkeypatch.setenv("STILLHOUSE_HOME", str(tmp_path / "home"))  # adapters are written here

    def run(
        store_url: str | None = None,
        keys: list[str] | None = None,
        models: dict[str, Any] | None = None,
    ) -> Any:
        config = make_config(
            tmp_path,
            UNUSED,
            store_url,
            models={"tiny": {"provider": "local", "model": str(tiny_base)}, **(models or {})},
            tasks={"support": {"teacher": "tiny"}},
            gateway={"api_keys": keys or []},
        )
        gw = gateway_factory(config)
        client = openai.OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0)
        return gw, client

    return run


def finished(client: openai.OpenAI, job_id: str, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in TERMINAL:
            return job
        assert time.monotonic() < deadline, f"job still {job.status}"
        time.sleep(0.2)


def messages_of(client: openai.OpenAI, job_id: str) -> list[str]:
    """The job's event messages, oldest first (the SDK pages through them)."""
    return [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=3)][::-1]


def error_of(info: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    body = info.value.response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return dict(body)


def refusals(error: type[openai.APIStatusError], *calls: Any) -> list[dict[str, Any]]:
    """The OpenAI error body of each call, each of which must raise `error`."""
    bodies = []
    for call in calls:
        with pytest.raises(error) as info:
            call()
        bodies.append(error_of(info))
    return bodies


@pytest.mark.slow
def test_a_fine_tuned_model_learns_the_file_and_answers_chat(start: Any) -> None:
    gw, client = start()
    uploaded = client.files.create(file=("train.jsonl", jsonl(examples(12))), purpose="fine-tune")
    assert (uploaded.object, uploaded.purpose, uploaded.status) == (
        "file",
        "fine-tune",
        "processed",
    )
    assert client.files.retrieve(uploaded.id).filename == "train.jsonl"

    hyper = {"n_epochs": 20, "batch_size": 4, "learning_rate_multiplier": 15}
    job = client.fine_tuning.jobs.create(
        training_file=uploaded.id,
        model="tiny",
        suffix="refunds",
        seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": hyper}},
    )
    assert job.status == "validating_files" and job.fine_tuned_model is None
    assert job.hyperparameters.n_epochs == 20 and job.hyperparameters.batch_size == 4

    done = finished(client, job.id)
    log = messages_of(client, job.id)
    assert done.status == "succeeded", log
    name = done.fine_tuned_model
    assert name == f"ft:tiny:stillhouse:refunds:{job.id.removeprefix('ftjob-')}"
    assert done.trained_tokens > 0 and done.finished_at >= done.created_at
    assert log[0] == f"Created fine-tuning job: {job.id}"
    assert log[1:3] == ["Files validated, moving job to queued state", "Fine-tuning job started"]
    assert log[-1] == "The job has successfully completed" and name in log[-2]
    metrics = [
        e for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"
    ]
    assert metrics[0].data["step"] == metrics[0].data["total_steps"] == 60  # 12/4 * 20 epochs
    assert metrics[0].data["train_loss"] < metrics[-1].data["train_loss"]  # newest first: it fell

    ask = [{"role": "system", "content": "Label the request."}]
    ask.append({"role": "user", "content": "hello, about something else entirely 4242"})
    tuned = client.chat.completions.create(model=name, messages=ask, temperature=0, max_tokens=12)
    base = client.chat.completions.create(
        model="support", messages=ask, temperature=0, max_tokens=12
    )
    assert tuned.choices[0].message.content == ANSWER  # the adapter is applied...
    assert base.choices[0].message.content != ANSWER  # ...and the base never says it
    assert name in [m.id for m in client.models.list()]
    stream = client.chat.completions.create(
        model=name, messages=ask, temperature=0, max_tokens=12, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == ANSWER

    gw.flush()
    with gw.store() as store:
        calls = store.list_calls(task=name)
    assert len(calls) == 2 and {c.route_reason for c in calls} == {"fine_tuned"}
    assert {c.model for c in calls} == {"tiny"}  # priced as the model it was trained on

    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.cancel(job.id)
    assert error_of(info)["code"] == "invalid_job_state" and "succeeded" in info.value.message


def test_auto_hyperparameters_and_cancelling(start: Any) -> None:
    _, client = start()
    uploaded = client.files.create(file=("t.jsonl", jsonl(examples(12))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=uploaded.id, model="tiny")
    # OpenAI's auto: enough epochs that a small file is seen ~100 times, a batch of one
    assert job.hyperparameters.n_epochs == 9 and job.hyperparameters.batch_size == 1
    assert job.hyperparameters.learning_rate_multiplier == 2.0
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    time.sleep(1.0)  # the runner, had it started, stops at its next step
    again = client.fine_tuning.jobs.retrieve(job.id)
    assert again.status == "cancelled" and again.fine_tuned_model is None
    assert messages_of(client, job.id)[-1] == "Fine-tuning job cancelled"
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.cancel(job.id)
    assert error_of(info)["code"] == "invalid_job_state" and "cancelled" in info.value.message


def test_lists_page_through_the_sdk(start: Any) -> None:
    _, client = start()
    ids = [
        client.files.create(file=(f"{i}.jsonl", jsonl(examples(2))), purpose="fine-tune").id
        for i in range(3)
    ]
    first = client.files.list(limit=2)
    assert [f.id for f in first.data] == ids[::-1][:2] and first.has_more
    assert [f.id for f in client.files.list(limit=2)] == ids[::-1]  # the SDK follows `after`
    assert [f.id for f in client.files.list(purpose="batch")] == []
    assert list(client.fine_tuning.jobs.list()) == []


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"hello\nworld\n", "line 1: not a JSON object"),
        (jsonl([{"prompt": "hi", "completion": "there"}]), "`messages`"),
        (jsonl([{"messages": [{"role": "user", "content": "hi"}]}]), "no assistant message"),
        (jsonl([{"messages": [{"role": "robot", "content": "hi"}]}]), "no valid role"),
        (jsonl([*examples(3), {"messages": [{"role": "user", "content": "x"}]}]), "line 4"),
        (b"\xff\xfe", "UTF-8"),
        (b"\n\n", "no examples"),
    ],
)
def test_a_file_that_is_not_chat_jsonl_is_refused(start: Any, content: bytes, says: str) -> None:
    _, client = start()
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("bad.jsonl", content), purpose="fine-tune")
    body = error_of(info)
    assert (body["type"], body["code"], body["param"]) == (
        "invalid_request_error",
        "invalid_file_format",
        "file",
    )
    assert says in body["message"]
    assert list(client.files.list()) == []  # nothing stored


def test_bad_requests_get_openai_errors_and_store_nothing(
    start: Any, store_url: str, monkeypatch: Any
) -> None:
    gw, client = start(store_url)
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("a.jsonl", jsonl(examples(12))), purpose="assistants")
    assert error_of(info)["param"] == "purpose"
    with pytest.raises(openai.NotFoundError) as info:
        client.files.retrieve("file-nope")
    assert error_of(info)["message"] == "No such File object: file-nope"

    small = client.files.create(file=("small.jsonl", jsonl(examples(3))), purpose="fine-tune")
    good = client.files.create(
        file=("good.jsonl", jsonl(examples(MIN_EXAMPLES))), purpose="fine-tune"
    )
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(training_file=small.id, model="tiny")
    body = error_of(info)
    assert (body["code"], body["param"]) == ("invalid_n_examples", "training_file")
    assert f"has 3 example(s), but must have at least {MIN_EXAMPLES}" in body["message"]

    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(training_file="file-nope", model="tiny")
    body = error_of(info)
    assert (body["code"], body["param"]) == ("file_not_found", "training_file")
    assert "file-nope" in body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(
            training_file=good.id, validation_file="file-gone", model="tiny"
        )
    assert error_of(info)["param"] == "validation_file"

    for model, why in [("gpt-4o-mini", "does not exist"), ("teacher", "not a local model")]:
        with pytest.raises(openai.BadRequestError) as info:
            client.fine_tuning.jobs.create(training_file=good.id, model=model)
        body = error_of(info)
        assert (body["code"], body["param"]) == ("model_not_available", "model")
        assert why in body["message"] and "models that are: tiny" in body["message"]

    bad = {"n_epochs": 0}
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(training_file=good.id, model="tiny", hyperparameters=bad)
    assert error_of(info)["param"] == "hyperparameters.n_epochs"
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(training_file=good.id, model="tiny", suffix="a:b")
    assert error_of(info)["param"] == "suffix"

    monkeypatch.setitem(sys.modules, "peft", None)  # as if the train extra were not installed
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(training_file=good.id, model="tiny")
    body = error_of(info)
    assert body["code"] == "train_extra_missing"
    assert "stillhouse[train]" in body["message"] and "peft" in body["message"]
    monkeypatch.undo()

    unknown = refusals(
        openai.NotFoundError,
        lambda: client.fine_tuning.jobs.retrieve("ftjob-nope"),
        lambda: client.fine_tuning.jobs.list_events("ftjob-nope"),
        lambda: client.fine_tuning.jobs.cancel("ftjob-nope"),
    )
    assert {b["message"] for b in unknown} == {"No such fine-tuning job: ftjob-nope"}
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="ft:tiny:stillhouse::nope", messages=[{"role": "user", "content": "hi"}]
        )

    page = httpx.post(  # a web page's cross-site form, to an open gateway
        gw.base_url + "/files",
        headers={"origin": "http://evil.example"},
        data={"purpose": "fine-tune"},
        files={"file": ("x.jsonl", jsonl(examples(12)))},
    )
    assert page.status_code == 403 and page.json()["error"]["code"] == "cross_site_refused"

    assert list(client.fine_tuning.jobs.list()) == []  # not one job stored half-way
    assert {f.id for f in client.files.list()} == {small.id, good.id}


def test_the_api_is_behind_the_gateway_keys(start: Any) -> None:
    gw, client = start(keys=[KEY])
    stranger = openai.OpenAI(base_url=gw.base_url, api_key="sk-wrong", max_retries=0)
    refused = refusals(
        openai.AuthenticationError,
        lambda: stranger.files.create(file=("a.jsonl", jsonl(examples(12))), purpose="fine-tune"),
        lambda: stranger.files.list(),
        lambda: stranger.files.retrieve("file-x"),
        lambda: stranger.fine_tuning.jobs.create(training_file="file-x", model="tiny"),
        lambda: stranger.fine_tuning.jobs.list(),
        lambda: stranger.fine_tuning.jobs.retrieve("ftjob-x"),
        lambda: stranger.fine_tuning.jobs.list_events("ftjob-x"),
        lambda: stranger.fine_tuning.jobs.cancel("ftjob-x"),
    )
    assert [b["code"] for b in refused] == ["invalid_api_key"] * 8
    assert list(client.files.list()) == []  # the key opens it


def test_the_store_moves_a_job_once_and_pages_its_rows(store_url: str) -> None:
    with open_store(store_url) as store:
        store.insert_file(UploadedFile("file-1", "t.jsonl", "fine-tune", 5, 1), "{}\n")
        assert store.file_content("file-1") == "{}\n" and store.get_file("file-1").examples == 1
        hyper = {"n_epochs": 1, "batch_size": 1, "learning_rate_multiplier": 2.0}
        jobs = [
            FineTuningJob(
                f"ftjob-{i}", "tiny", "file-1", "validating_files", hyper, 0, created_at=i
            )
            for i in range(3)
        ]
        for job in jobs:
            store.create_job(
                job, JobEvent(new_id("ftevent", "-"), job.id, "Created", created_at=job.created_at)
            )
        assert [j.id for j in store.list_jobs(2)] == ["ftjob-2", "ftjob-1"]
        assert [j.id for j in store.list_jobs(5, after="ftjob-1")] == ["ftjob-0"]
        assert store.next_job(["validating_files"]).id == "ftjob-0"

        moved = JobEvent(new_id("ftevent", "-"), "ftjob-0", "queued", created_at=10)
        assert store.move_job("ftjob-0", ["validating_files"], "queued", moved)
        assert not store.move_job("ftjob-0", ["validating_files"], "queued", moved)  # once only
        done = JobEvent(new_id("ftevent", "-"), "ftjob-0", "done", data={"step": 1}, created_at=11)
        serving = {"provider": "local", "model": "m", "adapter": "/a"}
        assert store.move_job(
            "ftjob-0",
            ["queued"],
            "succeeded",
            done,
            fine_tuned_model="ft:x",
            serving=serving,
            error=None,
        )
        job = store.get_job("ftjob-0")
        assert (job.status, job.serving, job.hyperparameters) == ("succeeded", serving, hyper)
        assert store.fine_tuned_models() == {"ft:x": ("tiny", serving)}
        events = store.job_events("ftjob-0")
        assert [e.message for e in events] == ["done", "queued", "Created"]
        assert events[0].data == {"step": 1}
        assert [e.message for e in store.job_events("ftjob-0", 5, after=events[0].id)] == [
            "queued",
            "Created",
        ]
        with pytest.raises(Exception):  # noqa: B017 - the backends raise their own IntegrityError
            store.create_job(jobs[1], JobEvent(new_id("ftevent", "-"), "ftjob-1", "twice"))
        assert len(store.job_events("ftjob-1")) == 1  # the failed create left no event behind


def test_a_job_that_cannot_train_fails_and_says_why(start: Any, tmp_path: Path) -> None:
    _, client = start(models={"gone": {"provider": "local", "model": str(tmp_path / "nothing")}})
    uploaded = client.files.create(file=("t.jsonl", jsonl(examples(10))), purpose="fine-tune")
    job = finished(
        client, client.fine_tuning.jobs.create(training_file=uploaded.id, model="gone").id
    )
    assert job.status == "failed" and job.fine_tuned_model is None and job.finished_at
    assert job.error.code == "training_failed" and "nothing" in job.error.message
    last = client.fine_tuning.jobs.list_events(job.id, limit=1).data[0]
    assert last.level == "error" and last.message.startswith("Fine-tuning job failed")
    assert "gone" not in str(client.models.list())


@pytest.mark.slow
def test_a_gateway_that_stops_mid_run_queues_the_job_and_it_resumes(
    tiny_base: Path, tmp_path: Path
) -> None:
    """What the runner does when its gateway stops: the job goes back to the queue and the next
    run resumes from its checkpoint (each epoch's end) instead of starting again."""
    from stillhouse.config import ModelConfig
    from stillhouse.train.jobs import run_job

    url = f"sqlite:///{tmp_path / 'store.db'}"
    models = {"tiny": ModelConfig(provider="local", model=str(tiny_base))}
    hyper = {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 2.0}
    with open_store(url) as store:
        store.insert_file(
            UploadedFile("file-1", "t.jsonl", "fine-tune", 1, 12), jsonl(examples(12)).decode()
        )
        job = FineTuningJob("ftjob-1", "tiny", "file-1", "validating_files", hyper, 0)
        store.create_job(job, JobEvent("ftevent-0", job.id, "Created"))
        steps = iter(range(1, 100))
        assert run_job(store, job, models, tmp_path, lambda: next(steps) == 3) == "queued"
        assert store.job_events(job.id, 1)[0].level == "warn"
        assert run_job(store, store.get_job(job.id), models, tmp_path) == "succeeded"
        done = store.get_job(job.id)
    assert done.result["resumed_at"] == 3 and done.result["steps"] == 6  # 12/4 a epoch, 2 epochs
    assert Path(done.serving["adapter"]).is_dir()

"""The gateway's own fine-tuning jobs, run to their end: the uploaded chat JSONL trained as a LoRA
(train/lora.py) on a local model of the config, in one daemon thread per gateway process that
takes the oldest waiting job from the store.

Off the request path: the API only stores a job; this thread moves it validating_files -> queued
-> running -> succeeded | failed | cancelled, each move a compare-and-set with its event, so
several gateways on one database never run a job twice, and a cancel is seen at the next step.
A gateway that stops mid-run puts its job back in the queue; the next run resumes from its
checkpoint. Torch is imported only when a job trains.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..errors import BadRequest
from ..openai.fine_tuning import fine_tuned_name, read_training_file
from ..registry import config_hash
from ..store import open_store
from ..store.base import TraceStore
from ..store.records import FineTuningJob, JobEvent, new_id
from .config import TrainSettings

log = logging.getLogger("stillhouse.train")

TRAIN_PACKAGES = ("torch", "transformers", "peft")
WAITING = ("validating_files", "queued")
METRIC_EVENTS = 10  # metrics events per run (and one for the last step)


def missing_train_packages() -> list[str]:
    """The packages of the `train` extra that cannot be imported here (found, not imported)."""
    return [name for name in TRAIN_PACKAGES if importlib.util.find_spec(name) is None]


def base_model(models: Mapping[str, ModelConfig], name: str) -> ModelConfig:
    """The [models.x] table a job trains on: a local model served by the torch engine (a
    transformers folder, packaged name or hub id), without an adapter of its own."""
    found = models.get(name)
    local = sorted(n for n, m in models.items() if m.provider == "local" and m.engine == "torch")
    why = None
    if found is None:
        why = "does not exist"
    elif found.provider != "local" or found.engine != "torch":
        why = "is not a local model of the torch engine"
    elif found.adapter is not None:
        why = "carries an adapter: fine-tune its base model"
    if why is not None:
        those = ", ".join(local) or "none: add a [models.x] with provider 'local'"
        raise BadRequest(
            f"Model {name} is not available for fine-tuning: it {why} (models that are: {those})",
            param="model",
            code="model_not_available",
        )
    assert found is not None
    return found


def settings_for(job: FineTuningJob, model: ModelConfig) -> TrainSettings:
    """The LoRA run a job asks for: its epochs and batch, the task default learning rate times
    its multiplier (LoRA's rate, 2e-4, where OpenAI's multiplier scales its own base)."""
    hyper = job.hyperparameters
    defaults = TrainSettings()
    return defaults.replace(
        base_model=model.model,
        epochs=hyper["n_epochs"],
        batch_size=hyper["batch_size"],
        learning_rate=defaults.learning_rate * hyper["learning_rate_multiplier"],
        seed=job.seed,
    )


def event(job_id: str, message: str, **options: Any) -> JobEvent:
    return JobEvent(id=new_id("ftevent", "-"), job_id=job_id, message=message, **options)


class Interrupted(Exception):
    """Training stopped before its end: the job was cancelled, or the gateway is stopping."""


def _examples(store: TraceStore, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    content = store.file_content(file_id)
    if content is None:
        raise BadRequest(f"file {file_id} is gone", param="training_file", code="file_not_found")
    return read_training_file(content.encode())


def run_job(
    store: TraceStore,
    job: FineTuningJob,
    models: Mapping[str, ModelConfig],
    out_root: Path,
    stopping: Callable[[], bool] = lambda: False,
) -> str:
    """Take `job` from where it waits to its end; its status then. A job another process took
    first, or that was cancelled meanwhile, is left alone."""
    try:
        model = base_model(models, job.model)
        train_set = _examples(store, job.training_file)
        holdout = _examples(store, job.validation_file)
    except BadRequest as err:
        return _fail(store, job, WAITING, err.message, err.code or "invalid_training_file")
    moved = job.status == "queued" or store.move_job(
        job.id,
        ["validating_files"],
        "queued",
        event(job.id, "Files validated, moving job to queued state"),
    )
    if not moved or not store.move_job(
        job.id, ["queued"], "running", event(job.id, "Fine-tuning job started")
    ):
        return store.job_status(job.id) or "gone"
    settings = settings_for(job, model)
    out = out_root / job.id
    total = math.ceil(len(train_set) / settings.batch_size) * settings.epochs
    every = max(1, total // METRIC_EVENTS)

    def on_step(step: int, loss: float) -> None:
        if stopping() or store.job_status(job.id) != "running":
            raise Interrupted  # a cancelled job's log ends with its cancelling
        if step % every == 0 or step == total:
            message = f"Step {step}/{total}: training loss={loss:.4f}"
            data = {"step": step, "train_loss": loss, "total_steps": total}
            store.add_job_events([event(job.id, message, type="metrics", data=data)])

    from .lora import train

    try:
        result = train(settings, train_set, holdout, out, progress=False, on_step=on_step)
    except Interrupted:
        if store.job_status(job.id) == "cancelled":
            shutil.rmtree(out, ignore_errors=True)
            return "cancelled"
        message = "The gateway stopped during training; the job waits to resume"
        store.move_job(job.id, ["running"], "queued", event(job.id, message, level="warn"))
        return "queued"
    except Exception as err:  # training failed: the job says why, the gateway carries on
        log.exception("fine-tuning job %s failed", job.id)
        shutil.rmtree(out, ignore_errors=True)
        return _fail(store, job, ["running"], f"{type(err).__name__}: {err}", "training_failed")
    name = fine_tuned_name(job.model, job.suffix, job.id)
    serving = {**model.serving_table(), "adapter": str(result.adapter_dir)}
    done = store.move_job(
        job.id,
        ["running"],
        "succeeded",
        event(job.id, f"New fine-tuned model created: {name}"),
        event(job.id, "The job has successfully completed"),
        finished_at=time.time(),
        fine_tuned_model=name,
        trained_tokens=result.tokens,
        serving=serving,
        result={
            **result.metrics(),
            "adapter_dir": str(result.adapter_dir),
            "config_hash": config_hash(settings.run_json()),
        },
    )
    if not done:  # cancelled as it finished
        shutil.rmtree(out, ignore_errors=True)
        return store.job_status(job.id) or "gone"
    return "succeeded"


def _fail(store: TraceStore, job: FineTuningJob, from_: Any, message: str, code: str) -> str:
    store.move_job(
        job.id,
        list(from_),
        "failed",
        event(job.id, f"Fine-tuning job failed: {message}", level="error"),
        finished_at=time.time(),
        error={"code": code, "message": message, "param": None},
    )
    return store.job_status(job.id) or "gone"


class JobRunner:
    """One daemon thread: publishes the fine-tuned models of the store (`publish`, every
    `interval` seconds) and runs the waiting jobs one at a time, oldest first. `wake()` makes it
    look at once (a job was just created)."""

    def __init__(
        self,
        store_url: str,
        models: Mapping[str, ModelConfig],
        out_root: Path,
        publish: Callable[[dict[str, tuple[str, dict[str, Any]]]], None],
        interval: float = 5.0,
    ) -> None:
        self.store_url = store_url
        self.models = models
        self.out_root = out_root
        self.publish = publish
        self.interval = interval
        self.trains = not missing_train_packages()  # a gateway without torch only serves
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stillhouse-finetune", daemon=True)

    def start(self) -> JobRunner:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        store = None  # this thread's own connection, reopened after a failure
        while not self._stop.is_set():
            self._wake.clear()
            try:
                store = store or open_store(self.store_url)
                self.publish(store.fine_tuned_models())
                job = store.next_job(WAITING) if self.trains else None
                if job is not None:
                    run_job(store, job, self.models, self.out_root, self._stop.is_set)
                    continue
            except Exception:  # the store is down: try again later
                log.warning("fine-tuning runner pass failed", exc_info=True)
                if store is not None:
                    store.close()
                store = None
            self._wake.wait(self.interval)
        if store is not None:
            store.close()

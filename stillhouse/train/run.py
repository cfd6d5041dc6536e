"""`stillhouse train` as a library call: pick the dataset (curating first when none is named),
resolve the task's settings, train locally or remotely, and register the candidate.

It never registers a candidate whose training did not finish: a failed or interrupted run leaves
only its checkpoint (local) or the provider's job (remote) behind.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..config import Config, ModelConfig
from ..curate import snapshot
from ..errors import ConfigError, StillhouseError
from ..registry import config_hash, register_candidate
from ..store.base import TraceStore
from ..store.records import Candidate
from .config import TrainSettings


def settings_for(config: Config, task_name: str, backend: str | None = None) -> TrainSettings:
    """The task's `[tasks.<task>.train]` table as settings, with the base model and account
    filled in from the task's student (and teacher) when not set."""
    task = config.task(task_name)
    settings = TrainSettings.of(task.train)
    backend = backend or settings.backend
    student = config.models.get(task.student) if task.student else None
    account = settings.account
    if backend != "local" and account is None:
        # The account is the first of (student, teacher) that lives at this provider.
        for role in (task.student, task.teacher):
            if role and config.models[role].provider == backend:
                account = role
                break
        if account is None:
            raise ConfigError(
                f"tasks.{task_name}.train.account: no {backend} model to fine-tune with "
                f"(add a [models.x] with provider = '{backend}' and name it here)"
            )
    base = settings.base_model
    if base is None and student is not None and student.provider == backend:
        base = student.model  # provider "local" for the local backend, else the same provider
    if base is None:
        raise ConfigError(
            f"tasks.{task_name}.train.base_model: not set, and the task's student is not a "
            f"{'local' if backend == 'local' else backend} model to start from"
        )
    return settings.replace(backend=backend, base_model=base, account=account)


def run_dir(settings: TrainSettings, task: str, dataset_id: str) -> Path:
    """Where a run writes: the same settings on the same data resume in the same folder."""
    from ..engine.sources import home

    root = Path(settings.output_dir) if settings.output_dir else home() / "runs"
    key = config_hash({"dataset": dataset_id, **settings.run_json()})[:12]
    return root / f"{task}-{dataset_id}-{key}"


def train_task(
    store: TraceStore,
    config: Config,
    task: str,
    *,
    dataset: str | None = None,
    backend: str | None = None,
    progress: bool = True,
    log: Any = None,
    parent: str | None = None,
) -> tuple[Candidate, dict[str, Any]]:
    """Train the task's student and register it: (candidate, the `train --json` document).
    `parent`: the candidate it retrains (the serving student), recorded in its lineage."""
    from ..curate.pipeline import curate

    started = time.perf_counter()
    settings = settings_for(config, task, backend)
    curated = dataset is None
    if dataset is None:
        ds = curate(store, config, task).dataset
    else:
        ds = snapshot.load(store, dataset)
        if ds.task != task:
            raise StillhouseError(f"dataset {ds.id} belongs to task '{ds.task}', not '{task}'")
    snapshot.verify(store, ds)
    if ds.train_count == 0:
        raise StillhouseError(f"dataset {ds.id} has no training examples")
    out = run_dir(settings, task, ds.id)
    artifacts: dict[str, Any]
    if settings.backend == "local":
        from .lora import train
        from .validate import Scorer, split

        # the run judges itself on a share of the train split; the holdout is the gate's alone
        fit, validation = split(
            [e.example for e in store.dataset_examples(ds.id, "train")],
            settings.validation,
            settings.seed,
        )
        scored = settings.stop_on == "agreement" or settings.target_agreement is not None
        metric = config.tasks[task].gate.metric
        scorer = Scorer(validation, metric) if scored and validation else None
        result = train(settings, fit, validation, out, progress=progress, validate=scorer)
        metrics = result.metrics()
        artifacts = {
            "run_dir": str(out),
            "adapter_dir": str(result.adapter_dir),
            "merged_dir": str(result.merged_dir) if result.merged_dir else None,
            "base_dir": result.base_dir,
        }
        name = config.tasks[task].student
        student = config.models.get(name) if name else None
        # served like the task's local student (its dtype, batch, timeout), on the trained base
        like = student.serving_table() if student and student.provider == "local" else {}
        serving: dict[str, Any] = {
            **like,
            "provider": "local",
            "model": settings.base_model,
            "adapter": str(result.adapter_dir),
        }
    else:
        from .remote import fine_tune, make_client, serving_model

        assert settings.account is not None
        account: ModelConfig = config.models[settings.account]
        last = settings.turns == "last"
        snapshot.export(store, ds.id, out / "train.jsonl", "train", last_turn_only=last)
        holdout = out / "holdout.jsonl" if ds.holdout_count else None
        if holdout is not None:
            snapshot.export(store, ds.id, holdout, "holdout")
        remote = fine_tune(
            make_client(settings.backend, account),
            settings.backend,
            out / "train.jsonl",
            holdout,
            settings,
            log=log or (lambda _line: None),
        )
        metrics = remote.metrics()
        artifacts = {
            "run_dir": str(out),
            "job_id": remote.job_id,
            "fine_tuned_model": remote.fine_tuned_model,
            "training_file": remote.training_file,
            "validation_file": remote.validation_file,
        }
        serving = serving_model(settings.backend, account, remote.fine_tuned_model)
    assert settings.base_model is not None
    candidate = register_candidate(
        store,
        task=task,
        dataset_id=ds.id,
        backend=settings.backend,
        base_model=settings.base_model,
        config=settings.run_json(),
        artifacts=artifacts,
        serving=serving,
        metrics=metrics,
        parent_id=parent,
    )
    doc = {
        "candidate": candidate.id,
        "task": task,
        "dataset": ds.id,
        "train_examples": ds.train_count,
        "curated": curated,
        "backend": settings.backend,
        "base_model": settings.base_model,
        "config_hash": candidate.config_hash,
        "train_loss": metrics.get("train_loss"),
        "validation_loss": metrics.get("validation_loss"),
        "seconds": round(time.perf_counter() - started, 3),
        "metrics": metrics,
        "artifacts": artifacts,
        "serving": serving,
    }
    return candidate, doc

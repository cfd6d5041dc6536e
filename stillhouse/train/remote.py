"""Fine-tuning on OpenAI or Azure OpenAI with the official `openai` SDK: upload the dataset's
JSONL, create the job, poll its status and events with backoff, and return the model it made.

It never hides a failed or cancelled job (both raise with the provider's reason), and never
prints a key: credentials come from the `[models.x]` table named by `train.account`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..errors import StillhouseError
from ..openai.fine_tuning import TERMINAL
from .config import TrainSettings

MAX_POLL_INTERVAL = 60.0
AZURE_API_VERSION = "2024-10-21"  # the GA version with fine-tuning


class FineTuneFailed(StillhouseError):
    """The provider's job failed, was cancelled, or did not finish in time."""

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


@dataclass(frozen=True, slots=True)
class RemoteResult:
    job_id: str
    status: str
    base_model: str
    fine_tuned_model: str
    training_file: str
    validation_file: str | None
    trained_tokens: int | None
    train_loss: float | None  # from the job's last metrics event
    seconds: float
    events: tuple[str, ...] = field(default=())

    def metrics(self) -> dict[str, Any]:
        return {
            "train_loss": self.train_loss,
            "trained_tokens": self.trained_tokens,
            "seconds": round(self.seconds, 3),
            "status": self.status,
        }


def make_client(backend: str, account: ModelConfig) -> Any:
    """An openai.OpenAI (or openai.AzureOpenAI) client for `account`'s endpoint and key."""
    import openai

    key = account.api_key.reveal() if account.api_key is not None else None
    if backend == "azure":
        if not account.base_url:
            raise StillhouseError("azure fine-tuning needs the account model's base_url")
        return openai.AzureOpenAI(
            azure_endpoint=account.base_url,
            api_key=key,
            api_version=account.api_version or AZURE_API_VERSION,
            max_retries=account.max_retries,
            timeout=account.timeout,
        )
    return openai.OpenAI(
        api_key=key,
        base_url=account.base_url or None,
        max_retries=account.max_retries,
        timeout=account.timeout,
    )


def _upload(
    client: Any, path: Path, settings: TrainSettings, sleep: Callable[[float], None]
) -> str:
    """Upload a JSONL file for fine-tuning and wait until the provider has processed it (Azure
    refuses a job whose file is still being imported)."""
    with path.open("rb") as f:
        uploaded = client.files.create(file=(path.name, f), purpose="fine-tune")
    delay = settings.poll_interval
    while getattr(uploaded, "status", "processed") not in ("processed", "error", "deleted"):
        sleep(delay)
        delay = min(delay * 2, MAX_POLL_INTERVAL)
        uploaded = client.files.retrieve(uploaded.id)
    if uploaded.status in ("error", "deleted"):
        raise FineTuneFailed(f"{path.name}: upload {uploaded.status}: {uploaded.status_details}")
    return str(uploaded.id)


def _hyperparameters(settings: TrainSettings) -> dict[str, Any]:
    hyper: dict[str, Any] = {"n_epochs": settings.epochs, "batch_size": settings.batch_size}
    if settings.learning_rate_multiplier is not None:
        hyper["learning_rate_multiplier"] = settings.learning_rate_multiplier
    return hyper


def fine_tune(
    client: Any,
    backend: str,
    train_path: str | Path,
    holdout_path: str | Path | None,
    settings: TrainSettings,
    *,
    log: Callable[[str], None] = lambda _line: None,
    sleep: Callable[[float], None] = time.sleep,
) -> RemoteResult:
    """Run one fine-tuning job to its end. Raises FineTuneFailed when it fails, is cancelled or
    outlives `settings.timeout`; an interrupt (Ctrl-C) cancels the job before re-raising."""
    if not settings.base_model:
        raise StillhouseError("remote training needs tasks.<task>.train.base_model")
    started = time.monotonic()
    training_file = _upload(client, Path(train_path), settings, sleep)
    validation_file = _upload(client, Path(holdout_path), settings, sleep) if holdout_path else None
    options: dict[str, Any] = {}
    if backend == "azure":
        options["hyperparameters"] = _hyperparameters(settings)  # Azure's GA API predates `method`
    else:
        options["method"] = {
            "type": "supervised",
            "supervised": {"hyperparameters": _hyperparameters(settings)},
        }
    if validation_file:
        options["validation_file"] = validation_file
    if settings.suffix:
        options["suffix"] = settings.suffix
    job = client.fine_tuning.jobs.create(
        model=settings.base_model, training_file=training_file, seed=settings.seed, **options
    )
    log(f"job {job.id}: {job.status}")

    seen: set[str] = set()
    lines: list[str] = []
    train_loss: float | None = None
    delay = settings.poll_interval
    try:
        while True:
            # Events come newest first; read the first page and keep the ones not seen yet.
            page = client.fine_tuning.jobs.list_events(job.id, limit=100)
            for event in reversed(list(page.data)):
                if event.id in seen:
                    continue
                seen.add(event.id)
                lines.append(event.message)
                log(f"job {job.id}: {event.message}")
                data = event.data if isinstance(event.data, dict) else {}
                if event.type == "metrics" and data.get("train_loss") is not None:
                    train_loss = float(data["train_loss"])
            if job.status in TERMINAL:
                break
            if time.monotonic() - started > settings.timeout:
                raise FineTuneFailed(
                    f"fine-tuning job {job.id} did not finish in {settings.timeout:.0f} s "
                    f"(still {job.status}; it keeps running at the provider)",
                    job.id,
                )
            sleep(delay)
            delay = min(delay * 2, MAX_POLL_INTERVAL)
            job = client.fine_tuning.jobs.retrieve(job.id)
    except KeyboardInterrupt:
        client.fine_tuning.jobs.cancel(job.id)
        raise
    if job.status == "failed":
        error = job.error
        reason = f"{error.code}: {error.message}" if error and error.message else "no reason given"
        raise FineTuneFailed(f"fine-tuning job {job.id} failed: {reason}", job.id)
    if job.status == "cancelled":
        raise FineTuneFailed(f"fine-tuning job {job.id} was cancelled", job.id)
    if not job.fine_tuned_model:
        raise FineTuneFailed(f"fine-tuning job {job.id} succeeded without a model", job.id)
    return RemoteResult(
        job_id=job.id,
        status=job.status,
        base_model=settings.base_model,
        fine_tuned_model=job.fine_tuned_model,
        training_file=training_file,
        validation_file=validation_file,
        trained_tokens=job.trained_tokens,
        train_loss=train_loss,
        seconds=time.monotonic() - started,
        events=tuple(lines),
    )


def serving_model(backend: str, account: ModelConfig, fine_tuned_model: str) -> dict[str, Any]:
    """The `[models.x]` table that serves the fine-tuned model through the openai/azure provider
    (the key stays a reference). On Azure the model must first be deployed under this name."""
    table: dict[str, Any] = {"provider": backend, "model": fine_tuned_model}
    if account.base_url:
        table["base_url"] = account.base_url
    if account.api_key is not None:
        table["api_key"] = f"env::{account.api_key.env_name}" if account.api_key.env_name else None
    if backend == "azure":
        table["api_version"] = account.api_version or AZURE_API_VERSION
        table["deployment"] = fine_tuned_model.replace(":", "-").replace(".", "-")[:64]
    return {k: v for k, v in table.items() if v is not None}

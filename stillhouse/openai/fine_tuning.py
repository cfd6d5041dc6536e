"""The OpenAI files and fine-tuning wire: a job request as it is checked, a training file as
OpenAI reads one (chat JSONL), the `auto` hyperparameters, and the file, job and event objects as
the API shows them. The gateway serves it (gateway/fine_tuning.py); the fake of OpenAI's own
service in the tests reads training files with the same check.

Pure: no I/O, nothing but the protocol. A bad request or file is a BadRequest naming the
parameter (or the line) at fault, raised before anything is stored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from ..errors import BadRequest
from .protocol import validated

MIN_EXAMPLES = 10  # OpenAI's minimum for a training file
STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("validating_files", "queued", "running")  # a job that can still be cancelled
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
SUFFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # a `:` would split the fine-tuned model's name
ORGANIZATION = "stillhouse"  # the organisation part of a fine-tuned model's name

# OpenAI's `auto` epochs (its fine-tuning cookbook): about 3 epochs, more for a small file so a
# run sees at least MIN_TARGET examples, fewer for a large one (at most MAX_TARGET).
TARGET_EPOCHS, MIN_EPOCHS, MAX_EPOCHS = 3, 1, 25
MIN_TARGET, MAX_TARGET = 100, 25_000


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    batch_size: Literal["auto"] | int = Field("auto", ge=1, le=256)
    learning_rate_multiplier: Literal["auto"] | float = Field("auto", gt=0, le=100)
    n_epochs: Literal["auto"] | int = Field("auto", ge=1, le=50)


class Supervised(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["supervised"]
    supervised: Supervised | None = None


class JobRequest(BaseModel):
    """POST /v1/fine_tuning/jobs, fields in the official order; unknown fields are ignored."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    training_file: str = Field(min_length=1)
    hyperparameters: Hyperparameters | None = None  # deprecated by OpenAI for `method`
    suffix: str | None = Field(None, pattern=SUFFIX.pattern)
    validation_file: str | None = None
    integrations: list[dict[str, Any]] | None = None
    seed: int | None = Field(None, ge=0, le=2_147_483_647)
    method: Method | None = None
    metadata: dict[str, str] | None = None

    def given(self) -> Hyperparameters:
        """The hyperparameters asked for, from `method` (preferred) or the older field."""
        supervised = self.method.supervised if self.method is not None else None
        if supervised is not None and supervised.hyperparameters is not None:
            return supervised.hyperparameters
        return self.hyperparameters or Hyperparameters()


def parse_job_request(body: dict[str, Any]) -> JobRequest:
    request = validated(JobRequest, body)
    if request.integrations:
        raise BadRequest(
            "integrations are not supported by this server", param="integrations", code=None
        )
    return request


def resolve(given: Hyperparameters, examples: int, batch_cap: int = 8) -> dict[str, Any]:
    """Numbers for `auto`: epochs by OpenAI's rule (a 10-example file trains 10 epochs), a
    batch of about 0.2% of the examples (1 for a small file, at most `batch_cap`), a
    learning-rate multiplier of 2 (of the LoRA rate, see train/jobs.py)."""
    epochs = given.n_epochs
    if epochs == "auto":
        epochs = TARGET_EPOCHS
        if examples * epochs < MIN_TARGET:
            epochs = min(MAX_EPOCHS, math.ceil(MIN_TARGET / examples))
        elif examples * epochs > MAX_TARGET:
            epochs = max(MIN_EPOCHS, MAX_TARGET // examples)
    batch = given.batch_size
    if batch == "auto":
        batch = max(1, min(batch_cap, round(examples * 0.002)))
    multiplier = given.learning_rate_multiplier
    if multiplier == "auto":
        multiplier = 2.0
    return {"batch_size": batch, "learning_rate_multiplier": float(multiplier), "n_epochs": epochs}


# -- a training file ------------------------------------------------------------------------------
def _bad_line(number: int, why: str, param: str = "file") -> BadRequest:
    return BadRequest(
        f"Invalid file format for Fine-Tuning API: line {number}: {why}",
        param=param,
        code="invalid_file_format",
    )


def _check_example(number: int, record: Any) -> None:
    if not isinstance(record, dict):
        raise _bad_line(number, "expected a JSON object with a `messages` list")
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad_line(number, "expected a JSON object with a non-empty `messages` list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise _bad_line(number, f"messages[{i}] has no valid role ({', '.join(ROLES)})")
    answers = [m for m in messages if m["role"] == "assistant"]
    if not answers:
        raise _bad_line(number, "no assistant message: an example needs an answer to learn")
    last = answers[-1]
    if not last.get("content") and not last.get("tool_calls"):
        raise _bad_line(number, "the last assistant message is empty")


def read_training_file(content: bytes) -> list[dict[str, Any]]:
    """A training file's chat examples (one JSON object per line, each with `messages` that
    include an assistant answer); BadRequest `invalid_file_format` naming the first bad line."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(
            "Invalid file format for Fine-Tuning API. Must be .jsonl (UTF-8 text)",
            param="file",
            code="invalid_file_format",
        ) from None
    examples = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise _bad_line(number, "not a JSON object (the file must be JSON lines)") from None
        _check_example(number, record)
        examples.append(record)
    if not examples:
        raise BadRequest(
            "Invalid file format for Fine-Tuning API: the file has no examples",
            param="file",
            code="invalid_file_format",
        )
    return examples


def too_few(file_id: str, examples: int, param: str = "training_file") -> BadRequest | None:
    """The error for a training file under MIN_EXAMPLES examples, or None."""
    if examples >= MIN_EXAMPLES:
        return None
    return BadRequest(
        f"Training file {file_id} has {examples} example(s), but must have at least "
        f"{MIN_EXAMPLES} examples",
        param=param,
        code="invalid_n_examples",
    )


def fine_tuned_name(base: str, suffix: str | None, job_id: str) -> str:
    """`ft:<base>:stillhouse:<suffix>:<job id>` (an empty suffix when none), as OpenAI names
    its own."""
    return f"ft:{base}:{ORGANIZATION}:{suffix or ''}:{job_id.removeprefix('ftjob-')}"


# -- objects as the API shows them ----------------------------------------------------------------
def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)


def file_object(f: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": f["id"],
        "object": "file",
        "bytes": f["bytes"],
        "created_at": _seconds(f["created_at"]),
        "filename": f["filename"],
        "purpose": f["purpose"],
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


def job_object(job: Mapping[str, Any]) -> dict[str, Any]:
    hyper = job["hyperparameters"]
    return {
        "object": "fine_tuning.job",
        "id": job["id"],
        "model": job["model"],
        "created_at": _seconds(job["created_at"]),
        "finished_at": _seconds(job["finished_at"]),
        "fine_tuned_model": job["fine_tuned_model"],
        "organization_id": ORGANIZATION,
        "result_files": [],
        "status": job["status"],
        "validation_file": job["validation_file"],
        "training_file": job["training_file"],
        "hyperparameters": hyper,
        "trained_tokens": job["trained_tokens"],
        "error": job["error"],
        "seed": job["seed"],
        "suffix": job["suffix"],
        "user_provided_suffix": job["suffix"],
        "estimated_finish": None,
        "integrations": [],
        "metadata": job["metadata"],
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
    }


def event_object(event: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.event",
        "id": event["id"],
        "created_at": _seconds(event["created_at"]),
        "level": event["level"],
        "message": event["message"],
        "data": event["data"] or {},
        "type": event["type"],
    }


def page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """A cursor page: the SDK asks for the next with `after=<last id>` while `has_more`."""
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }

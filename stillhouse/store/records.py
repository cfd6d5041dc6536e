"""The records the trace store keeps: one captured call, one score on a call.

A call's fields map onto Langfuse generations (input=request, output=response, model,
usage.input/output, startTime=created_at, completionStartTime=created_at+ttft, level/statusMessage
=status/error, sessionId=session_key, metadata) and onto OpenTelemetry's gen_ai.* attributes
(gen_ai.request.model=upstream_model, gen_ai.provider.name=provider,
gen_ai.response.finish_reasons=finish_reason, gen_ai.usage.input_tokens/output_tokens).
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from dataclasses import dataclass, field, fields
from typing import Any, Literal

Role = Literal["teacher", "student"]
Status = Literal["ok", "error"]


# A random per-process part and a counter: unique across gateway processes, ordered by time
# within one, and no system call per id (uuid4's urandom read was 9% of the gateway's CPU).
_PROCESS = os.urandom(5).hex()
_COUNTER = itertools.count()


def new_id(prefix: str, sep: str = "_") -> str:
    """`prefix_` + 12 hex digits of milliseconds + 10 of process + 10 of counter (`sep` "-" for
    the OpenAI API's own objects: `file-…`, `ftjob-…`)."""
    millis = time.time_ns() // 1_000_000
    return f"{prefix}{sep}{millis:012x}{_PROCESS}{next(_COUNTER) & 0xFFFFFFFFFF:010x}"


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def shallow_dict(record: Any) -> dict[str, Any]:
    """A record's fields as a dict, sharing (not copying) nested values: records are frozen."""
    return {name: getattr(record, name) for name in _field_names(record.__class__)}


@dataclass(frozen=True, slots=True)
class Call:
    """One request through the gateway and what came back (or the error)."""

    id: str
    task: str
    request: dict[str, Any]
    role: Role = "teacher"
    model: str = ""  # the model's name in stillhouse.toml
    provider: str = ""
    upstream_model: str = ""  # the name the upstream knows it by
    route_reason: str = ""
    stream: bool = False
    response: dict[str, Any] | None = None
    status: Status = "ok"
    http_status: int = 200
    error: str | None = None
    finish_reason: str | None = None
    created_at: float = field(default_factory=time.time)
    latency_ms: float | None = None
    ttft_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost: float | None = None
    session_key: str | None = None
    confidence: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return shallow_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Call:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class Score:
    """Feedback or an evaluation on a call: numeric `value` and/or categorical `label`."""

    id: str
    call_id: str
    name: str
    value: float | None = None
    label: str | None = None
    source: str = "api"  # api | human | eval | shadow
    comment: str | None = None
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return shallow_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Score:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


CALL_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Call))
SCORE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Score))


@dataclass(frozen=True, slots=True)
class Dataset:
    """A curated, immutable dataset snapshot; `id` is derived from `content_hash`."""

    id: str
    task: str
    content_hash: str  # sha256 of the examples, their splits, intents and source calls
    created_at: float
    train_count: int
    holdout_count: int
    intents_count: int
    source_count: int  # calls curation started from
    removed: dict[str, int] = field(default_factory=dict)  # filter or stage -> examples removed
    config: dict[str, Any] = field(default_factory=dict)  # the curation settings used

    def to_dict(self) -> dict[str, Any]:
        return shallow_dict(self)


@dataclass(frozen=True, slots=True)
class DatasetExample:
    """One line of a dataset: an OpenAI chat fine-tuning example and where it came from."""

    position: int
    split: str  # train | holdout
    call_id: str
    intent: str
    example: dict[str, Any]


DATASET_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Dataset))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A trained student not yet serving: a LoRA adapter or a provider's fine-tuned model.

    Written once, never updated. `config_hash` is the sha256 of the settings that trained it;
    `parent_id` is the candidate it was trained to replace, if any.
    """

    id: str
    task: str
    dataset_id: str
    backend: str  # local | openai | azure
    base_model: str
    config_hash: str
    created_at: float = field(default_factory=time.time)
    parent_id: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the training settings
    artifacts: dict[str, Any] = field(default_factory=dict)  # adapter_dir, merged_dir, job...
    serving: dict[str, Any] = field(default_factory=dict)  # a [models.x] table that serves it
    metrics: dict[str, Any] = field(default_factory=dict)  # train_loss, seconds, ...

    def to_dict(self) -> dict[str, Any]:
        return shallow_dict(self)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A candidate's validation, as the lifecycle acts on it: passed the gate or not, why, the
    calibrated confidence threshold for fallback (None: no fallback), the eval run it was judged
    in and the figures it was judged on."""

    passed: bool
    reason: str
    threshold: float | None = None
    eval_run_id: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    signal: str = "p10"  # the confidence reduction the threshold is on (answers.SIGNALS)
    # {intent: threshold} where thresholds are per intent (`threshold`: for the others)
    intent_thresholds: dict[str, float] | None = None


@dataclass(frozen=True, slots=True)
class EvalRun:
    """One evaluation of a candidate on a dataset's holdout; written once."""

    id: str
    candidate_id: str
    dataset_id: str
    config_hash: str
    created_at: float = field(default_factory=time.time)
    metrics: dict[str, Any] = field(default_factory=dict)
    passed: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return shallow_dict(self)


@dataclass(frozen=True, slots=True)
class Release:
    """A candidate promoted towards serving, on the strength of an eval run; written once (its
    later rollout stages are separate rows of their own)."""

    id: str
    candidate_id: str
    eval_run_id: str | None
    config_hash: str
    created_at: float = field(default_factory=time.time)
    state: str = "created"
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return shallow_dict(self)


@dataclass(frozen=True, slots=True)
class Export:
    """A candidate written out for another engine (GGUF for llama.cpp / Ollama); written once."""

    id: str
    candidate_id: str
    format: str
    path: str
    config_hash: str
    created_at: float = field(default_factory=time.time)
    config: dict[str, Any] = field(default_factory=dict)  # merge, quant, base model
    files: dict[str, Any] = field(default_factory=dict)  # file name -> {"bytes", "sha256"}

    def to_dict(self) -> dict[str, Any]:
        return shallow_dict(self)


CANDIDATE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Candidate))
EVAL_RUN_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(EvalRun))
RELEASE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Release))
EXPORT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Export))


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A Responses API answer kept for `GET /v1/responses/{id}` and `previous_response_id`: the
    Response object as returned, and the chat turns so far (the answer's included, the
    instructions not) that a later request continues from. Its call holds the rest."""

    id: str
    task: str
    call_id: str
    conversation: list[dict[str, Any]]
    response: dict[str, Any]
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return shallow_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoredResponse:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


RESPONSE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(StoredResponse))


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A file uploaded through `POST /v1/files` (purpose fine-tune: chat JSONL, checked on
    upload); its content is stored beside it and read only by training."""

    id: str
    filename: str
    purpose: str
    bytes: int
    examples: int
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return shallow_dict(self)


@dataclass(frozen=True, slots=True)
class FineTuningJob:
    """A fine-tuning job of the gateway's own API: a LoRA on a local model. Its status moves
    only forward (validating_files -> queued -> running -> succeeded | failed | cancelled), each
    move a compare-and-set with its event (store.move_job)."""

    id: str
    model: str  # the [models.x] name trained on
    training_file: str
    status: str
    hyperparameters: dict[str, Any]  # resolved: no "auto" left
    seed: int
    validation_file: str | None = None
    suffix: str | None = None
    metadata: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    error: dict[str, Any] | None = None  # {code, message, param} when it failed
    serving: dict[str, Any] | None = None  # a [models.x] table that serves the result
    result: dict[str, Any] | None = None  # training metrics and the adapter's folder

    def to_dict(self) -> dict[str, Any]:
        return shallow_dict(self)


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One line of a fine-tuning job's log; `type` metrics carries `data` (step, train_loss)."""

    id: str
    job_id: str
    message: str
    level: str = "info"
    type: str = "message"
    data: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return shallow_dict(self)


FILE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(UploadedFile))
JOB_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(FineTuningJob))
JOB_EVENT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(JobEvent))

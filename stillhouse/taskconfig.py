"""The `[tasks.<t>]` table of stillhouse.toml: a task's models and mode, and its grace, gate,
rollout, drift, routing, curation, optimisation, training, review and general-set tables, with
the tier that fills their defaults. config.py's `Config` holds one `TaskConfig` per task.

Every table forbids unknown keys; a mistake is reported with its dotted key by config.py.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from .tiers import TIERED_KEYS, TIERS, source_of

TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any) -> float:
    """'90s', '15m', '1h', '2d' or a number of seconds -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError("must be a duration such as '30s', '15m', '1h' or '2d'")
    return float(match.group(1)) * _UNITS[match.group(2)]


class Table(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)


class GraceConfig(Table):
    min_conversations: int = Field(300, ge=0)
    min_unique_intents: int = Field(50, ge=0)
    max_days: float = Field(14, gt=0)


class GateConfig(Table):
    agreement: float = Field(0.92, ge=0, le=1)
    metric: Literal["exact", "json", "similarity", "judge", "tool_call"] = "exact"
    kept_agreement: float = Field(0.97, ge=0, le=1)
    format_compliance: float = Field(
        0.99, ge=0, le=1, description="share of answers that must be well-formed"
    )
    max_p95_latency_ms: float | None = Field(None, gt=0)
    general_max_drop: float | None = Field(None, ge=0, le=1)
    min_coverage: float | None = Field(
        None,
        gt=0,
        le=1,
        description="gate the operating point: pass a student whose raw agreement misses "
        "`agreement` when, at its calibrated threshold out of sample, it keeps at least this "
        "share of answers and their lower bound reaches `kept_agreement` (docs/evaluation.md)",
    )

    @field_validator("agreement", "kept_agreement", "format_compliance")
    @classmethod
    def _above_a_coin_flip(cls, value: float) -> float:
        if value <= 0.5:
            raise ValueError(
                "must be above 0.5: a gate at or below a coin flip lets a student through that "
                "disagrees with the teacher as often as it agrees (docs/evaluation.md)"
            )
        return value


class RolloutConfig(Table):
    stages: list[int] = Field(default_factory=lambda: [10, 25, 50, 75, 90])
    min_samples: int = Field(200, ge=1)
    min_dwell: float = Field(3600.0, ge=0, description="seconds; accepts '1h', '15m'")
    max_error_rate: float = Field(0.02, ge=0, le=1)
    max_latency_ratio: float = Field(1.0, gt=0, description="student p95 / teacher p95")
    max_hallucination_rate: float = Field(0.05, ge=0, le=1)
    final_share: int = Field(100, ge=1, le=100, description="percent of sessions when serving")

    @field_validator("min_dwell", mode="before")
    @classmethod
    def _dwell(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("stages")
    @classmethod
    def _stages(cls, value: list[int]) -> list[int]:
        if not value or any(not 0 < s <= 100 for s in value) or value != sorted(set(value)):
            raise ValueError("must be increasing percentages between 1 and 100")
        return value


class DriftConfig(Table):
    """When a serving student has drifted enough to retrain (see docs/lifecycle.md)."""

    window: float = Field(86_400.0, gt=0, description="seconds; accepts '1d', '6h'")
    min_samples: int = Field(100, ge=1)
    agreement: float | None = Field(None, ge=0, le=1, description="default: gate.agreement")
    max_psi: float = Field(0.25, gt=0)

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> float:
        return parse_duration(value)


class RoutingConfig(Table):
    fallback: Literal["none", "confidence"] = "confidence"
    shadow_rate: float = Field(0.05, ge=0, le=1)
    stream_fallback: Literal["buffer", "none"] = Field(
        "buffer", description="buffer: hold a student stream until its confidence is known"
    )
    teacher_logprobs: bool = Field(
        False,
        description="ask the teacher for token logprobs (hidden from a client that did not), so "
        "each teacher answer is captured with its confidence; only for teachers that return them",
    )
    teacher_intents: list[str] = Field(default_factory=list, description="always the teacher")
    student_intents: list[str] = Field(
        default_factory=list, description="the student at full share from the first stage"
    )

    @model_validator(mode="after")
    def _intents(self) -> RoutingConfig:
        both = sorted(set(self.teacher_intents) & set(self.student_intents))
        if both:
            raise ValueError(f"intents in both teacher_intents and student_intents: {both}")
        return self


PIIKind = Literal["email", "phone", "card", "iban", "national_id", "ip"]
PII_KINDS: tuple[PIIKind, ...] = ("email", "phone", "card", "iban", "national_id", "ip")


class CurateConfig(Table):
    """How a task's captured calls become a fine-tuning dataset (see docs/curation.md)."""

    holdout: float = Field(0.15, ge=0, lt=1)
    seed: int = 0
    dedupe_threshold: float = Field(0.8, gt=0, le=1)
    group_similarity: float = Field(
        0.5, gt=0, le=1, description="user turns this alike share a split (leak-free holdout)"
    )
    pii: list[PIIKind] = Field(default_factory=lambda: list(PII_KINDS))
    max_per_intent: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1, description="the student's context, in tokens")
    intents: Literal["auto", "metadata", "tfidf", "embeddings"] = "auto"


class OptimizeConfig(Table):
    """The cheap first candidate: a few-shot prompt on the student's base model
    (docs/evaluation.md)."""

    prompt: bool = Field(True, description="try a prompt candidate before training a LoRA")
    shots: int = Field(8, ge=0, le=64, description="few-shot examples, one per intent")


class TrainConfig(Table):
    """How `stillhouse train` trains the task's student (see docs/training.md)."""

    backend: Literal["local", "openai", "azure"] = "local"
    base_model: str | None = Field(None, description="default: the student model's `model`")
    account: str | None = Field(None, description="remote: the [models.x] whose endpoint is used")
    r: int = Field(16, ge=1, le=256)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1
    )
    # 5 epochs at 1e-3: the best of a sweep on two tasks (docs/benchmarks.md, "Training to a
    # target"); the design's 3 at 2e-4 left both students 7-15 points lower
    epochs: int = Field(5, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(8, ge=1)
    warmup: float = Field(0.1, ge=0, lt=1)
    max_steps: int | None = Field(None, ge=1)
    max_length: int = Field(1024, ge=8)
    turns: Literal["last", "all"] = Field("last", description="assistant turns that get the loss")
    seed: int = 0
    eval_every: int | None = Field(None, ge=1)
    validation: float = Field(
        0.1,
        ge=0,
        lt=0.5,
        description="share of the train split (by request, seeded) kept aside to judge the "
        "adapter as it trains; never the gate's holdout. 0: none (no early stopping)",
    )
    stop_on: Literal["loss", "agreement"] = Field(
        "loss",
        description="what picks the adapter kept and stops training early: the validation "
        "loss, or the student's greedy agreement with the teacher on the validation split "
        "(costs a generation pass at each evaluation)",
    )
    target_agreement: float | None = Field(
        None,
        gt=0,
        le=1,
        description="stop as soon as the validation agreement reaches this (implies "
        "stop_on = 'agreement')",
    )
    patience: int = Field(2, ge=1)
    checkpoint_every: int | None = Field(None, ge=1)
    merge: bool = False
    threads: int | None = Field(None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="auto: bfloat16 on a GPU, float32 on a CPU; bfloat16 on a CPU computes in "
        "bfloat16 autocast (weights and optimizer stay float32)",
    )
    output_dir: str | None = None
    suffix: str | None = Field(None, max_length=64)
    learning_rate_multiplier: float | None = Field(None, gt=0)
    poll_interval: float = Field(2.0, gt=0)
    timeout: float = Field(86_400.0, gt=0, description="seconds; accepts '6h'")

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float:
        return parse_duration(value)


class ReviewConfig(Table):
    """What goes to the human review queue (see docs/review.md)."""

    rate: float = Field(0.02, ge=0, le=1, description="share of student answers sampled")
    fallbacks: bool = Field(True, description="every fallback whose answers disagree")
    correction_weight: int = Field(2, ge=1, le=20, description="copies of a correction trained")


class GeneralConfig(Table):
    """The forgetting guard: general examples mixed into each dataset (see docs/curation.md)."""

    share: float = Field(0.10, ge=0, lt=1, description="of the training split")
    prompts: str | None = Field(None, description="a JSONL file; default: packaged chitchat")
    count: int = Field(200, ge=1, description="prompts `stillhouse general` sends the teacher")
    holdout: float = Field(0.2, gt=0, lt=1, description="of the general set, for evaluation")


class TaskConfig(Table):
    teacher: str
    student: str | None = None
    mode: Literal["teacher", "auto", "student"] = "auto"
    tier: Literal["cost", "accuracy"] | None = None
    description: str = ""
    response_schema: dict[str, Any] | None = None
    constrain_student: bool = Field(
        True,
        description="students (in serving and at evaluation) decode under response_schema: "
        "a json_schema response_format, honoured token by token by the local engines",
    )
    grace: GraceConfig = Field(default_factory=GraceConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    optimize: OptimizeConfig = Field(default_factory=OptimizeConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    general: GeneralConfig = Field(default_factory=GeneralConfig)
    retrain_every: float | None = Field(None, gt=0, description="seconds; accepts '90d'")
    safe_student_after: float = Field(
        14 * 86_400.0, ge=0, description="seconds serving in auto before mode student; '14d'"
    )
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("retrain_every", mode="before")
    @classmethod
    def _retrain_every(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @field_validator("safe_student_after", mode="before")
    @classmethod
    def _safe_after(cls, value: Any) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _shadows_for_auto(self) -> TaskConfig:
        if self.mode == "auto" and self.routing.shadow_rate == 0:
            raise ValueError(
                "routing.shadow_rate = 0 with mode = 'auto': with no shadow comparisons the "
                "rollout gates never see live agreement and drift can never be detected; set "
                "a rate above 0 (default 0.05) or mode = 'teacher' / 'student'"
            )
        return self

    @model_validator(mode="after")
    def _json_for_a_schema(self) -> TaskConfig:
        """A task that declares a response_schema answers in JSON: unless the TOML names a
        metric, agreement compares the JSON's fields (key order and spacing never count)."""
        if self.response_schema is not None and "metric" not in self.gate.model_fields_set:
            gate = self.gate.model_copy(update={"metric": "json"})
            object.__setattr__(self, "gate", gate)  # frozen: built once, before anyone reads it
        return self

    @model_validator(mode="after")
    def _tier_defaults(self) -> TaskConfig:
        """Fill the tiered keys the TOML left out from the tier, and remember each source."""
        for key in TIERED_KEYS:
            table, field = key.split(".")
            section = getattr(self, table)
            explicit = field in section.model_fields_set
            self._sources[key] = source_of(key, explicit, self.tier)
            if not explicit and self.tier is not None:
                value = TIERS[self.tier][key]
                # frozen model: the validator builds the table once, before anyone reads it
                object.__setattr__(self, table, section.model_copy(update={field: value}))
        return self

    def settings(self) -> dict[str, dict[str, Any]]:
        """The tiered keys in force: {key: {"value", "source"}} (source: toml, tier:X, default)."""
        out = {}
        for key in TIERED_KEYS:
            table, field = key.split(".")
            out[key] = {
                "value": getattr(getattr(self, table), field),
                "source": self._sources.get(key, "default"),
            }
        return out

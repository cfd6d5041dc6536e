"""stillhouse.toml parsed into pydantic models.

Every table forbids unknown keys, and every mistake is reported with its dotted key
(`tasks.support.gate.agreement: must be <= 1`). Secrets are `env::NAME` references resolved only
when used, and never printed. Relative paths resolve against the config file's folder.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .tiers import TIERED_KEYS, TIERS, source_of

DEFAULT_CONFIG_NAME = "stillhouse.toml"
CONFIG_ENV = "STILLHOUSE_CONFIG"


class Secret:
    """A secret given as `env::NAME` (preferred) or a literal; its value never appears in a repr."""

    __slots__ = ("_raw",)

    def __init__(self, raw: str) -> None:
        self._raw = raw

    @property
    def env_name(self) -> str | None:
        return self._raw[5:] if self._raw.startswith("env::") else None

    def reveal(self) -> str:
        """The secret's value; raises ConfigError when its environment variable is unset."""
        name = self.env_name
        if name is None:
            return self._raw
        value = os.environ.get(name)
        if not value:
            raise ConfigError(f"environment variable {name} is not set")
        return value

    def __repr__(self) -> str:
        return f"Secret(env::{self.env_name})" if self.env_name else "Secret('***')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)


def _to_secret(value: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string, e.g. 'env::OPENAI_API_KEY'")
    return Secret(value)


SecretStr = Annotated[
    Secret,
    Field(json_schema_extra={"type": "string"}),
    PlainSerializer(lambda s: repr(s), return_type=str),
]

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


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)


class Price(_Table):
    """Dollars per million tokens, or a self-hosted GPU's hourly cost spread over its measured
    throughput (`gpu_hour` with `tokens_per_second`; see docs/costs.md)."""

    input_per_mtok: float = Field(0.0, ge=0)
    cached_input_per_mtok: float | None = Field(None, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)
    gpu_hour: float | None = Field(None, ge=0, description="dollars per GPU hour (self-hosted)")
    tokens_per_second: float | None = Field(
        None, gt=0, description="measured tokens/s of that GPU at your load, input + output"
    )

    @model_validator(mode="after")
    def _gpu(self) -> Price:
        if (self.gpu_hour is None) != (self.tokens_per_second is None):
            raise ValueError("gpu_hour and tokens_per_second go together")
        if self.gpu_hour is not None and (
            self.input_per_mtok or self.output_per_mtok or self.cached_input_per_mtok
        ):
            raise ValueError("give either gpu_hour and tokens_per_second or *_per_mtok, not both")
        return self


Provider = Literal["openai", "azure", "anthropic", "openai-compatible", "local"]


class ModelConfig(_Table):
    provider: Provider
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_version: str | None = None  # azure
    deployment: str | None = None  # azure; defaults to `model`
    price: Price | None = None
    timeout: float = Field(60.0, gt=0, description="seconds for one upstream attempt")
    max_retries: int = Field(2, ge=0, le=10)
    headers: dict[str, str] = Field(default_factory=dict)
    adapter: str | None = Field(None, description="local: a LoRA adapter directory (peft)")
    dtype: Literal["float32", "bfloat16", "auto"] = Field(
        "float32",
        description="local: the weights' precision; auto is bfloat16 where the CPU computes it "
        "natively (AVX512-BF16 or AMX) or on a GPU, else float32",
    )
    max_batch: int = Field(8, ge=1, le=256, description="local: requests decoded together")

    @field_validator("api_key", mode="before")
    @classmethod
    def _secret(cls, value: Any) -> Secret | None:
        return None if value is None else _to_secret(value)

    def serving_table(self) -> dict[str, Any]:
        """This table as a candidate's `serving` table (no price, the key as its env reference,
        never its value): a candidate built on this model is served like it."""
        table = self.model_dump(exclude_none=True, exclude={"api_key", "price"})
        if self.api_key is not None and self.api_key.env_name:
            table["api_key"] = f"env::{self.api_key.env_name}"
        return table

    @classmethod
    def of_serving(cls, serving: dict[str, Any]) -> ModelConfig:
        """A candidate's `serving` table as a [models.x] table (keys it does not know, such as a
        prompt candidate's `prompt`, dropped)."""
        return cls.model_validate({k: v for k, v in serving.items() if k in cls.model_fields})

    @model_validator(mode="after")
    def _needs(self) -> ModelConfig:
        if self.provider in ("openai-compatible", "azure") and not self.base_url:
            raise ValueError(f"provider '{self.provider}' needs base_url")
        if self.adapter is not None and self.provider != "local":
            raise ValueError("adapter is only for provider 'local' (vLLM names its own)")
        if self.provider != "local":
            # a table dumped with its defaults (a candidate's serving table) is fine
            for key in ("dtype", "max_batch"):
                if getattr(self, key) != type(self).model_fields[key].default:
                    raise ValueError(f"{key} is only for provider 'local'")
        return self


class GraceConfig(_Table):
    min_conversations: int = Field(300, ge=0)
    min_unique_intents: int = Field(50, ge=0)
    max_days: float = Field(14, gt=0)


class GateConfig(_Table):
    agreement: float = Field(0.92, ge=0, le=1)
    metric: Literal["exact", "json", "similarity", "judge"] = "exact"
    kept_agreement: float = Field(0.97, ge=0, le=1)
    format_compliance: float = Field(
        0.99, ge=0, le=1, description="share of answers that must be well-formed"
    )
    max_p95_latency_ms: float | None = Field(None, gt=0)
    general_max_drop: float | None = Field(None, ge=0, le=1)

    @field_validator("agreement", "kept_agreement", "format_compliance")
    @classmethod
    def _above_a_coin_flip(cls, value: float) -> float:
        if value <= 0.5:
            raise ValueError(
                "must be above 0.5: a gate at or below a coin flip lets a student through that "
                "disagrees with the teacher as often as it agrees (docs/evaluation.md)"
            )
        return value


class RolloutConfig(_Table):
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


class DriftConfig(_Table):
    """When a serving student has drifted enough to retrain (see docs/lifecycle.md)."""

    window: float = Field(86_400.0, gt=0, description="seconds; accepts '1d', '6h'")
    min_samples: int = Field(100, ge=1)
    agreement: float | None = Field(None, ge=0, le=1, description="default: gate.agreement")
    max_psi: float = Field(0.25, gt=0)

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> float:
        return parse_duration(value)


class RoutingConfig(_Table):
    fallback: Literal["none", "confidence"] = "confidence"
    shadow_rate: float = Field(0.05, ge=0, le=1)
    stream_fallback: Literal["buffer", "none"] = Field(
        "buffer", description="buffer: hold a student stream until its confidence is known"
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


class CurateConfig(_Table):
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


class OptimizeConfig(_Table):
    """The cheap first candidate: a few-shot prompt on the student's base model
    (docs/evaluation.md)."""

    prompt: bool = Field(True, description="try a prompt candidate before training a LoRA")
    shots: int = Field(8, ge=0, le=64, description="few-shot examples, one per intent")


class TrainConfig(_Table):
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
    epochs: int = Field(3, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(8, ge=1)
    warmup: float = Field(0.1, ge=0, lt=1)
    max_steps: int | None = Field(None, ge=1)
    max_length: int = Field(1024, ge=8)
    turns: Literal["last", "all"] = Field("last", description="assistant turns that get the loss")
    seed: int = 0
    eval_every: int | None = Field(None, ge=1)
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


class ReviewConfig(_Table):
    """What goes to the human review queue (see docs/review.md)."""

    rate: float = Field(0.02, ge=0, le=1, description="share of student answers sampled")
    fallbacks: bool = Field(True, description="every fallback whose answers disagree")
    correction_weight: int = Field(2, ge=1, le=20, description="copies of a correction trained")


class GeneralConfig(_Table):
    """The forgetting guard: general examples mixed into each dataset (see docs/curation.md)."""

    share: float = Field(0.10, ge=0, lt=1, description="of the training split")
    prompts: str | None = Field(None, description="a JSONL file; default: packaged chitchat")
    count: int = Field(200, ge=1, description="prompts `stillhouse general` sends the teacher")
    holdout: float = Field(0.2, gt=0, lt=1, description="of the general set, for evaluation")


class TaskConfig(_Table):
    teacher: str
    student: str | None = None
    mode: Literal["teacher", "auto", "student"] = "auto"
    tier: Literal["cost", "accuracy"] | None = None
    description: str = ""
    response_schema: dict[str, Any] | None = None
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


class LifecycleConfig(_Table):
    """The lifecycle controller and the gateway's routing table (see docs/lifecycle.md)."""

    controller: bool = Field(True, description="run the controller inside `stillhouse serve`")
    tick: float = Field(30.0, gt=0, description="seconds between controller passes")
    refresh: float = Field(5.0, gt=0, description="seconds between routing table reloads")

    @field_validator("tick", "refresh", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> float:
        return parse_duration(value)


class GatewayConfig(_Table):
    host: str = "127.0.0.1"
    port: int = Field(8400, ge=1, le=65535)
    api_keys: list[SecretStr] = Field(default_factory=list)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # Host headers served; None: any when api_keys are set, else only loopback names, so that a
    # web page the operator opens cannot reach an open gateway by DNS rebinding.
    allowed_hosts: list[str] | None = None
    read_timeout: float = Field(30.0, gt=0)  # seconds for a request's whole body
    max_connections: int = Field(1000, ge=1)  # beyond it `serve` answers 503
    session_max_age: float = Field(12 * 3600, ge=60)  # seconds a dashboard sign-in lasts

    @field_validator("api_keys", mode="before")
    @classmethod
    def _secrets(cls, value: Any) -> list[Secret]:
        if not isinstance(value, list):
            raise ValueError("must be a list of keys, e.g. ['env::STILLHOUSE_API_KEY']")
        return [_to_secret(v) for v in value]


class StoreConfig(_Table):
    url: str = "sqlite:///stillhouse.db"
    queue_size: int = Field(10_000, ge=1)
    batch_size: int = Field(500, ge=1)
    journal_dir: str | None = Field(None, description="default: beside the config file")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value


class Config(_Table):
    store: StoreConfig = Field(default_factory=StoreConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    tasks: dict[str, TaskConfig] = Field(default_factory=dict)

    def task(self, name: str) -> TaskConfig:
        """The task's table; a ConfigError naming the tasks there are when it is not one."""
        found = self.tasks.get(name)
        if found is None:
            known = ", ".join(sorted(self.tasks)) or "none configured"
            raise ConfigError(f"unknown task '{name}' (tasks: {known})")
        return found

    @model_validator(mode="after")
    def _references(self) -> Config:
        for name, task in self.tasks.items():
            if not TASK_NAME.fullmatch(name) or ".." in name:
                # a task's name becomes part of folder names (training runs), URLs and headers
                raise ConfigError(
                    f"tasks.{name}: a task name is 1-64 letters, digits, '_', '-' or '.', "
                    "starting with a letter or digit"
                )
            for role in ("teacher", "student"):
                ref = getattr(task, role)
                if ref is not None and ref not in self.models:
                    known = ", ".join(sorted(self.models)) or "none defined"
                    raise ConfigError(
                        f"tasks.{name}.{role}: unknown model '{ref}' (models: {known})"
                    )
            account = task.train.account
            if account is not None and account not in self.models:
                raise ConfigError(f"tasks.{name}.train.account: unknown model '{account}'")
        return self


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        msg = msg.removeprefix("Value error, ")
        lines.append(f"{key}: {msg}")
    return "; ".join(lines)


def parse_config(data: dict[str, Any], base_dir: Path | None = None) -> Config:
    """Validate a parsed TOML document; relative paths resolve against `base_dir`."""
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None
    except ConfigError:
        raise
    base = (base_dir or Path.cwd()).resolve()
    store = config.store
    updates: dict[str, Any] = {}
    if store.url.startswith("sqlite:///"):
        path = Path(store.url.removeprefix("sqlite:///"))
        updates["url"] = f"sqlite:///{path if path.is_absolute() else base / path}"
    journal = Path(store.journal_dir) if store.journal_dir else Path("stillhouse.journal")
    updates["journal_dir"] = str(journal if journal.is_absolute() else base / journal)
    models = {
        name: m.model_copy(update={"adapter": str(base / m.adapter)})
        if m.adapter and not Path(m.adapter).is_absolute()
        else m
        for name, m in config.models.items()
    }
    tasks = {
        name: t.model_copy(
            update={
                "train": t.train.model_copy(update={"output_dir": str(base / t.train.output_dir)})
            }
        )
        if t.train.output_dir and not Path(t.train.output_dir).is_absolute()
        else t
        for name, t in config.tasks.items()
    }
    tasks = {
        name: t.model_copy(
            update={"general": t.general.model_copy(update={"prompts": str(base / prompts)})}
        )
        if (prompts := t.general.prompts) and not Path(prompts).is_absolute()
        else t
        for name, t in tasks.items()
    }
    return config.model_copy(
        update={"store": store.model_copy(update=updates), "models": models, "tasks": tasks}
    )


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The config file to use: the argument, else $STILLHOUSE_CONFIG, else ./stillhouse.toml."""
    return Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_NAME)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate stillhouse.toml."""
    file = config_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file (run `stillhouse init` to write one)") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{file}: {err}") from None
    try:
        return parse_config(data, file.parent)
    except ConfigError as err:
        raise ConfigError(f"{file}: {err}") from None

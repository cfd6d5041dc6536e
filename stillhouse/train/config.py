"""The settings one training run uses: the `[tasks.<task>.train]` table of stillhouse.toml
(taskconfig.TrainConfig, where the design's LoRA defaults are written) as plain data.

Plain data, no torch: the CLI and the registry hash these settings without importing ML code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..taskconfig import TrainConfig

Backend = str  # local | openai | azure

# The defaults are written once, in the [tasks.<t>.train] table's model; a run's settings are that
# table as plain data (TrainSettings.of), so the two cannot drift apart.
_DEFAULTS = TrainConfig()
DEFAULT_TARGETS = tuple(_DEFAULTS.target_modules)


@dataclass(frozen=True, slots=True)
class TrainSettings:
    """One run's settings: the task's train table as plain data. The defaults are the table's
    (r=16, alpha=32, q/k/v/o, 5 epochs at 1e-3)."""

    backend: Backend = _DEFAULTS.backend
    # local: a model spec; remote: the model to fine-tune
    base_model: str | None = _DEFAULTS.base_model
    # remote: the [models.x] whose endpoint and key are used
    account: str | None = _DEFAULTS.account
    r: int = _DEFAULTS.r
    alpha: int = _DEFAULTS.alpha
    dropout: float = _DEFAULTS.dropout
    target_modules: tuple[str, ...] = tuple(_DEFAULTS.target_modules)
    epochs: int = _DEFAULTS.epochs
    learning_rate: float = _DEFAULTS.learning_rate
    batch_size: int = _DEFAULTS.batch_size
    warmup: float = _DEFAULTS.warmup  # share of the steps spent warming the learning rate up
    max_steps: int | None = _DEFAULTS.max_steps
    max_length: int = _DEFAULTS.max_length
    turns: str = _DEFAULTS.turns  # last | all: the assistant turns that get the loss
    seed: int = _DEFAULTS.seed
    # steps between holdout evaluations; None: once per epoch
    eval_every: int | None = _DEFAULTS.eval_every
    validation: float = _DEFAULTS.validation  # share of the train split judged while training
    stop_on: str = _DEFAULTS.stop_on  # loss | agreement
    target_agreement: float | None = _DEFAULTS.target_agreement
    patience: int = _DEFAULTS.patience  # evaluations without improvement before stopping early
    # steps between checkpoints; None: at each evaluation
    checkpoint_every: int | None = _DEFAULTS.checkpoint_every
    merge: bool = _DEFAULTS.merge
    threads: int | None = _DEFAULTS.threads
    device: str = _DEFAULTS.device  # auto | cpu | cuda
    precision: str = _DEFAULTS.precision  # auto (GPU bfloat16, CPU float32) | float32 | bfloat16
    output_dir: str | None = _DEFAULTS.output_dir
    suffix: str | None = _DEFAULTS.suffix  # remote
    learning_rate_multiplier: float | None = _DEFAULTS.learning_rate_multiplier  # remote
    # remote: first wait between status polls (doubles, max 60 s)
    poll_interval: float = _DEFAULTS.poll_interval
    timeout: float = _DEFAULTS.timeout  # remote: give up waiting after this many seconds

    @classmethod
    def of(cls, table: TrainConfig) -> TrainSettings:
        """The settings a `[tasks.<t>.train]` table gives."""
        return cls.from_mapping(table.model_dump())

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> TrainSettings:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "target_modules" in values:
            values["target_modules"] = tuple(values["target_modules"])
        return cls(**values)

    def replace(self, **changes: Any) -> TrainSettings:
        return TrainSettings.from_mapping({**asdict(self), **changes})

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    def run_json(self) -> dict[str, Any]:
        """The settings that change what is trained (not where it is written, nor how fast)."""
        data = self.to_json()
        for key in ("output_dir", "threads", "poll_interval", "timeout", "checkpoint_every"):
            data.pop(key)
        return data

"""The settings one training run uses: the design's LoRA defaults, overridden per task by the
`[tasks.<task>.train]` table of stillhouse.toml.

Plain data, no torch: the CLI and the registry hash these settings without importing ML code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

Backend = str  # local | openai | azure

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True, slots=True)
class TrainSettings:
    """One run's settings; the defaults are the design's (r=16, alpha=32, q/k/v/o, 3 epochs)."""

    backend: Backend = "local"
    base_model: str | None = None  # local: a model spec; remote: the model to fine-tune
    account: str | None = None  # remote: the [models.x] whose endpoint and key are used
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    epochs: int = 3
    learning_rate: float = 2e-4
    batch_size: int = 8
    warmup: float = 0.1  # share of the steps spent warming the learning rate up
    max_steps: int | None = None
    max_length: int = 1024
    turns: str = "last"  # last | all: the assistant turns that get the loss
    seed: int = 0
    eval_every: int | None = None  # steps between holdout evaluations; None: once per epoch
    patience: int = 2  # evaluations without improvement before stopping early
    checkpoint_every: int | None = None  # steps between checkpoints; None: at each evaluation
    merge: bool = False
    threads: int | None = None
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (GPU bfloat16, CPU float32) | float32 | bfloat16
    output_dir: str | None = None
    suffix: str | None = None  # remote
    learning_rate_multiplier: float | None = None  # remote
    poll_interval: float = 2.0  # remote: first wait between status polls (doubles, max 60 s)
    timeout: float = 86_400.0  # remote: give up waiting after this many seconds

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

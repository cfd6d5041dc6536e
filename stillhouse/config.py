"""stillhouse.toml parsed into pydantic models: the store, gateway, lifecycle and model tables, the
whole file (`Config`) and how it is read; a task's own tables are in taskconfig.py.

Every table forbids unknown keys, and every mistake is reported with its dotted key
(`tasks.support.gate.agreement: must be <= 1`). Secrets are `env::NAME` references resolved only
when used, and never printed. Relative paths resolve against the config file's folder.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .taskconfig import (  # TaskConfig is read from here too, as the type of Config.tasks
    TASK_NAME,
    Table,
    TaskConfig,
    parse_duration,
)

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


class Price(Table):
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


class ModelConfig(Table):
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
    engine: Literal["torch", "llama-cpp"] = Field(
        "torch",
        description="local: torch (transformers; batches requests, serves HF folders) or "
        "llama-cpp (llama-cpp-python, the cpu extra: GGUF models, several times faster on a CPU)",
    )

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
            for key in ("dtype", "max_batch", "engine"):
                if getattr(self, key) != type(self).model_fields[key].default:
                    raise ValueError(f"{key} is only for provider 'local'")
        return self


class LifecycleConfig(Table):
    """The lifecycle controller and the gateway's routing table (see docs/lifecycle.md)."""

    controller: bool = Field(True, description="run the controller inside `stillhouse serve`")
    tick: float = Field(30.0, gt=0, description="seconds between controller passes")
    refresh: float = Field(5.0, gt=0, description="seconds between routing table reloads")

    @field_validator("tick", "refresh", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> float:
        return parse_duration(value)


class GatewayConfig(Table):
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


class StoreConfig(Table):
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


class TelemetryConfig(Table):
    """OpenTelemetry spans of the gateway's calls, sent over OTLP/HTTP (the `otel` extra)."""

    otlp_endpoint: str | None = Field(
        None, description="an OTLP/HTTP collector, e.g. http://collector:4318 (unset: no spans)"
    )
    service_name: str = Field("stillhouse", min_length=1)
    headers: dict[str, SecretStr] = Field(default_factory=dict)

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (OTLP over HTTP)")
        return value

    @field_validator("headers", mode="before")
    @classmethod
    def _secrets(cls, value: Any) -> dict[str, Secret]:
        if not isinstance(value, dict):
            raise ValueError("must be a table of header names to values, e.g. 'env::OTLP_KEY'")
        return {str(k): _to_secret(v) for k, v in value.items()}


class Config(Table):
    store: StoreConfig = Field(default_factory=StoreConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
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

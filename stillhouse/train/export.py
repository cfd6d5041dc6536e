"""Directories a trained student is served from: a peft adapter that vLLM (`--enable-lora`) and
our local engine load, and a merged model for servers without LoRA support.

An adapter written here always names its base by absolute path, and nothing here ever writes
into the base model's directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import StillhouseError

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
VLLM_MAX_LORA_RANK = 16  # vLLM's default --max-lora-rank; larger ranks need the flag raised


def _replace_dir(building: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    building.replace(target)
    return target


def save_adapter(model: Any, directory: str | Path, base_dir: str) -> Path:
    """Save a PeftModel's adapter (safetensors) with its base recorded as an absolute path."""
    target = Path(directory)
    building = target.with_name(target.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    model.save_pretrained(building, safe_serialization=True)
    config_file = building / "adapter_config.json"
    config = json.loads(config_file.read_text())
    # peft stores the path as given; a relative one breaks as soon as the cwd changes
    base = Path(base_dir)
    config["base_model_name_or_path"] = str(base.resolve()) if base.exists() else base_dir
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
    return _replace_dir(building, target)


def merge_adapter(model: Any, tokenizer: Any, directory: str | Path) -> Path:
    """Fold the adapter into a copy of the base weights and save a plain transformers model.

    This consumes `model` (peft's merge_and_unload works in place): call it last.
    """
    target = Path(directory)
    building = target.with_name(target.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    merged = model.merge_and_unload()
    merged.save_pretrained(building, safe_serialization=True)
    tokenizer.save_pretrained(building)
    return _replace_dir(building, target)


def merge_from_dirs(base: str, adapter_dir: str | Path, directory: str | Path) -> Path:
    """A merged model directory from a base (any model spec) and an adapter directory."""
    from ..engine.runtime import load_model

    model, tokenizer = load_model(base, adapter=adapter_dir)
    return merge_adapter(model, tokenizer, directory)


def check_vllm_adapter(directory: str | Path, max_rank: int = VLLM_MAX_LORA_RANK) -> dict[str, Any]:
    """Raise unless `directory` is an adapter vLLM's `--enable-lora` loads: safetensors weights,
    a LoRA (not another peft method), rank within `max_rank`, no extra trained modules and no
    bias. Returns its adapter_config."""
    path = Path(directory)
    missing = [f for f in ADAPTER_FILES if not (path / f).is_file()]
    if missing:
        raise StillhouseError(
            f"{path}: not a LoRA adapter directory (missing {', '.join(missing)})"
        )
    config: dict[str, Any] = json.loads((path / "adapter_config.json").read_text())
    problems = []
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type is {config.get('peft_type')}, not LORA")
    if int(config.get("r", 0)) > max_rank:
        problems.append(f"rank {config.get('r')} > {max_rank} (start vLLM with --max-lora-rank)")
    if config.get("modules_to_save"):
        problems.append("modules_to_save is set")
    if config.get("bias", "none") != "none":
        problems.append("bias is trained")
    if config.get("use_dora"):
        problems.append("DoRA is not served by vLLM")
    if problems:
        raise StillhouseError(f"{path}: vLLM cannot serve this adapter: {'; '.join(problems)}")
    return config

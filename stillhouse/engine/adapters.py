"""Loading a LoRA adapter onto its base model, refusing a missing, corrupt or mismatched one.

A corrupt adapter must fail with an AdapterError that names the folder and what is wrong, before
it is served: never a traceback from deep inside peft, never a model silently without its adapter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import AdapterError

WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def check_adapter(path: str | Path) -> Path:
    """The adapter's folder, once its config and weights are readable; AdapterError if not."""
    folder = Path(path)
    if not folder.is_dir():
        raise AdapterError(f"adapter {folder}: no such folder")
    config = folder / "adapter_config.json"
    try:
        doc = json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"adapter {folder}: adapter_config.json is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AdapterError(f"adapter {folder}: adapter_config.json is unreadable: {err}") from None
    if not isinstance(doc, dict) or "peft_type" not in doc:
        raise AdapterError(f"adapter {folder}: adapter_config.json is not a peft adapter config")
    weights = next((folder / w for w in WEIGHTS if (folder / w).is_file()), None)
    if weights is None:
        raise AdapterError(f"adapter {folder}: no weights ({' or '.join(WEIGHTS)})")
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(weights), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                    f.get_tensor(name)  # reads every tensor: a truncated file fails here
        except Exception as err:  # safetensors raises its own SafetensorError, or OSError
            raise AdapterError(f"adapter {folder}: {weights.name} is corrupt: {err}") from None
    return folder


def load_adapter(model: Any, path: str | Path) -> Any:
    """`model` with the adapter at `path` applied (peft), or AdapterError saying why not."""
    from peft import PeftModel

    folder = check_adapter(path)
    try:
        return PeftModel.from_pretrained(model, str(folder))
    except Exception as err:  # peft/torch: shape mismatches, unknown target modules, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AdapterError(f"adapter {folder} does not fit this base model: {first}") from None

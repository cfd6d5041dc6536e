"""GGUF files for the llama.cpp engine: the model file a spec names, refusing what is not GGUF,
and a peft LoRA adapter written as a GGUF adapter checked against its base.

No torch here: adapters are read with safetensors' numpy loader and written with the `gguf`
package (the `cpu` extra), so the llama.cpp engine runs without the `train` extra.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import AdapterError, ConfigError
from . import convert
from .adapters import check_adapter
from .sources import models_dir, packaged_gguf, resolve

MAGIC = b"GGUF"
# Part of a converted adapter's cache key: raise it when lora_to_gguf writes differently, so that an
# adapter converted by an older version is not served again.
ADAPTER_FORMAT = 2

# peft module names -> llama.cpp's tensor names (the architectures llama.cpp's converter maps the
# same way: Llama, Qwen2, Mistral, ...).
PEFT_MODULES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def check_gguf(path: Path, what: str) -> Path:
    """`path`, once it is a readable file that starts like a GGUF file; ConfigError if not."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as err:
        raise ConfigError(f"{what} {path}: cannot be read: {err.strerror or err}") from None
    if head != MAGIC:
        raise ConfigError(f"{what} {path}: not a GGUF file (it starts with {head!r}, not b'GGUF')")
    return path


def model_gguf(spec: str) -> Path:
    """The GGUF file the llama.cpp engine loads for `spec`: a packaged model's file (the Qwen
    parts joined once and kept under models_dir()), a .gguf path, a folder's one .gguf, or a
    Hugging Face folder written as GGUF by llama.cpp's converter (once, then kept)."""
    source = resolve(spec)
    if source.packaged is not None:
        return packaged_gguf(source.packaged)
    if source.kind == "gguf":
        assert source.path is not None
        return check_gguf(source.path, "model")
    if source.kind == "directory":
        assert source.path is not None
        found = sorted(source.path.glob("*.gguf"))
        model = [p for p in found if not p.name.startswith("adapter")]
        if len(model) == 1:
            return check_gguf(model[0], "model")
        if model:
            raise ConfigError(
                f"model '{spec}': {len(model)} .gguf files in the folder; name one of them"
            )
        # a Hugging Face folder: written as GGUF once by llama.cpp's converter, then kept
        return convert.converted_gguf(source.path)
    raise ConfigError(
        f"model '{spec}': the llama-cpp engine loads GGUF files (a packaged model's name or a "
        '.gguf path); write one with `stillhouse export --format gguf`, or use engine = "torch"'
    )


def read_gguf(path: Path, what: str) -> Any:
    """A gguf.GGUFReader over `path`, or ConfigError when it cannot be parsed."""
    import gguf

    check_gguf(path, what)
    try:
        return gguf.GGUFReader(str(path))
    except Exception as err:  # gguf raises ValueError, struct.error, ... on a broken file
        raise ConfigError(f"{what} {path}: not a readable GGUF file: {err}") from None


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def base_shapes(reader: Any) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape as numpy reads it (rows, columns): ggml's ne reversed."""
    return {t.name: tuple(int(n) for n in reversed(t.shape.tolist())) for t in reader.tensors}


def permute_rotary(weights: Any, n_head: int) -> Any:
    """llama.cpp's rotary layout for q/k rows (convert_hf_to_gguf's LlamaModel.permute)."""
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def read_lora(adapter: str | Path) -> tuple[Path, float, dict[str, dict[str, Any]]]:
    """(folder, lora_alpha, {GGUF tensor name: {"lora_A": array, "lora_B": array}}) of a peft
    LoRA adapter, read with numpy; AdapterError for a tensor llama.cpp has no name for."""
    import numpy as np
    from safetensors import safe_open

    folder = check_adapter(adapter)
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise AdapterError(f"adapter {folder}: GGUF export reads adapter_model.safetensors only")
    alpha = float(config.get("lora_alpha") or config.get("r") or 8)
    pairs: dict[str, dict[str, Any]] = {}
    with safe_open(str(weights), framework="np") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            # base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight
            parts = key.split(".")
            if "layers" not in parts or parts[-2] not in ("lora_A", "lora_B"):
                raise AdapterError(f"adapter {folder}: cannot export the tensor {key} to GGUF")
            layer = int(parts[parts.index("layers") + 1])
            module = ".".join(parts[parts.index("layers") + 2 : -2])
            if module not in PEFT_MODULES:
                raise AdapterError(f"adapter {folder}: no GGUF name for the module {module}")
            name = f"blk.{layer}.{PEFT_MODULES[module]}.weight"
            pairs.setdefault(name, {})[parts[-2]] = np.asarray(f.get_tensor(key), np.float32)
    for name, pair in pairs.items():
        if set(pair) != {"lora_A", "lora_B"}:
            raise AdapterError(f"adapter {folder}: {name} lacks its lora_A or lora_B")
    return folder, alpha, pairs


def lora_to_gguf(adapter: str | Path, base: Path, out: Path) -> Path:
    """Write the peft LoRA adapter at `adapter` as a GGUF adapter for the GGUF model `base`.

    Every adapted tensor must exist in the base with the shape the adapter was trained for; an
    AdapterError names the first that does not. q/k rows are permuted as llama.cpp's converter
    does for Llama-family bases (their rotary layout differs from transformers').
    """
    import gguf
    import numpy as np

    folder, alpha, pairs = read_lora(adapter)
    reader = read_gguf(base, "base model")
    arch = str(_field(reader, "general.architecture"))
    n_head = int(_field(reader, f"{arch}.attention.head_count"))
    n_head_kv = int(_field(reader, f"{arch}.attention.head_count_kv") or n_head)
    shapes = base_shapes(reader)
    for name, pair in sorted(pairs.items()):
        want, got = shapes.get(name), (pair["lora_B"].shape[0], pair["lora_A"].shape[1])
        if want != got:
            raise AdapterError(
                f"adapter {folder} does not fit the base {base.name}: {name} is {want} in the "
                f"base, {got} in the adapter"
            )
    partial = out.with_name(out.name + f".partial-{os.getpid()}")
    writer = gguf.GGUFWriter(str(partial), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    for name, pair in sorted(pairs.items()):
        a, b = pair["lora_A"], pair["lora_B"]
        if arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            b = permute_rotary(b, n_head if "attn_q" in name else n_head_kv)
        writer.add_tensor(name + ".lora_a", np.ascontiguousarray(a))
        writer.add_tensor(name + ".lora_b", np.ascontiguousarray(b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(out)
    return out


def adapter_gguf(adapter: str | Path, base: Path) -> Path:
    """A GGUF adapter for `base`: a .gguf file as given (checked), or a peft folder converted
    once and cached under models_dir()/adapters, keyed by its weights and the base."""
    path = Path(adapter)
    if path.is_file():
        check_adapter_gguf(path, base)
        return path
    folder = check_adapter(path)
    weights = folder / "adapter_model.safetensors"
    digest = hashlib.sha256(f"{ADAPTER_FORMAT}|{base.resolve()}".encode())
    for piece in (weights, folder / "adapter_config.json"):
        if piece.is_file():
            digest.update(piece.read_bytes())
    out = models_dir() / "adapters" / f"{folder.name}-{digest.hexdigest()[:12]}.gguf"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        lora_to_gguf(folder, base, out)
    return out


def check_adapter_gguf(path: Path, base: Path) -> None:
    """AdapterError unless `path` is a GGUF LoRA adapter whose tensors fit `base`."""
    try:
        reader = read_gguf(path, "adapter")
    except ConfigError as err:
        raise AdapterError(str(err)) from None
    if _field(reader, "general.type") != "adapter":
        raise AdapterError(f"adapter {path}: a GGUF file, but not an adapter (general.type)")
    base_reader = read_gguf(base, "base model")
    shapes = base_shapes(base_reader)
    arch = _field(reader, "general.architecture")
    base_arch = _field(base_reader, "general.architecture")
    if arch != base_arch:
        raise AdapterError(f"adapter {path} is for {arch}, the base {base.name} is {base_arch}")
    tensors = {t.name: tuple(int(n) for n in reversed(t.shape.tolist())) for t in reader.tensors}
    for name, a_shape in tensors.items():
        if not name.endswith(".lora_a"):
            continue
        target = name.removesuffix(".lora_a")
        b_shape = tensors.get(target + ".lora_b")
        want = shapes.get(target)
        if b_shape is None or want is None or want != (b_shape[0], a_shape[1]):
            got = None if b_shape is None else (b_shape[0], a_shape[1])
            raise AdapterError(
                f"adapter {path} does not fit the base {base.name}: {target} is {want} in the "
                f"base, {got} in the adapter"
            )

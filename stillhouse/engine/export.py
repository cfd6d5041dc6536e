"""A student written out as GGUF for llama.cpp and Ollama: the base model plus its LoRA as a GGUF
adapter, or the LoRA merged into the base (and quantised), with an Ollama `Modelfile`.

The base is any model the llama.cpp engine loads (gguf_files.model_gguf): a packaged GGUF, a .gguf
file, or a Hugging Face folder, written as GGUF (F16) by llama.cpp's own converter (engine.convert).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AdapterError, ConfigError
from .gguf_files import adapter_gguf, model_gguf, permute_rotary, read_gguf, read_lora

QUANTS = {"q8_0": 7, "q4_k_m": 15}  # llama.cpp's LLAMA_FTYPE_MOSTLY_* for each --quant

# Ollama's Go template for ChatML (SmolLM2, Qwen2.5): what their Jinja templates render.
CHATML = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)


@dataclass(frozen=True, slots=True)
class Exported:
    model: Path
    adapter: Path | None
    modelfile: Path
    manifest: Path


def _default_system(template: str) -> str | None:
    """The system prompt a ChatML template adds when a conversation has none (SmolLM2 does)."""
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    rendered = env.from_string(template).render(
        messages=[{"role": "user", "content": "\x00"}], add_generation_prompt=True
    )
    head = "<|im_start|>system\n"
    if rendered.startswith(head):
        return rendered[len(head) : rendered.index("<|im_end|>")]
    return None


def modelfile(model: str, adapter: str | None, template: str | None, temperature: float) -> str:
    """An Ollama Modelfile: FROM, ADAPTER, TEMPLATE (ChatML), stop tokens, the default system."""
    lines = [f"FROM ./{model}"]
    if adapter:
        lines.append(f"ADAPTER ./{adapter}")
    if template and "<|im_start|>" in template:
        lines.append(f'TEMPLATE """{CHATML}"""')
        system = _default_system(template)
        if system:
            lines.append(f'SYSTEM """{system}"""')
        lines += ['PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|im_start|>"']
    else:
        lines.append("# no TEMPLATE: Ollama reads the chat template from the GGUF's metadata")
    lines.append(f"PARAMETER temperature {temperature:g}")
    return "\n".join(lines) + "\n"


def _merge(base: Path, adapter: str | Path, out: Path) -> None:
    """Write `base` with the peft adapter added into its weights (merged tensors in F16, the
    others copied as they are)."""
    import gguf
    import numpy as np

    folder, alpha, pairs = read_lora(adapter)
    reader = read_gguf(base, "base model")
    arch = str(reader.fields["general.architecture"].contents())
    n_head = int(reader.fields[f"{arch}.attention.head_count"].contents())
    kv_field = reader.fields.get(f"{arch}.attention.head_count_kv")
    n_head_kv = int(kv_field.contents()) if kv_field is not None else n_head
    deltas: dict[str, Any] = {}
    for name, pair in pairs.items():
        rank = pair["lora_A"].shape[0]
        delta = (alpha / rank) * (pair["lora_B"] @ pair["lora_A"])
        if arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            delta = permute_rotary(delta, n_head if "attn_q" in name else n_head_kv)
        deltas[name] = delta
    writer = gguf.GGUFWriter(str(out), arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    merged: dict[str, Any] = {}
    for tensor in reader.tensors:
        if tensor.name in deltas:
            weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            if weights.shape != deltas[tensor.name].shape:
                raise AdapterError(f"adapter {folder} does not fit the base at {tensor.name}")
            merged[tensor.name] = (weights + deltas[tensor.name]).astype(np.float16)
            data = merged[tensor.name]
            writer.add_tensor_info(
                tensor.name, data.shape, data.dtype, data.nbytes, gguf.GGMLQuantizationType.F16
            )
        else:
            writer.add_tensor_info(
                tensor.name,
                tensor.data.shape,
                tensor.data.dtype,
                tensor.data.nbytes,
                tensor.tensor_type,
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(merged.get(tensor.name, tensor.data))
    writer.close()


def _quantise(source: Path, out: Path, quant: str) -> None:
    from .llamacpp import import_llama_cpp

    llama_cpp = import_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTS[quant]
    params.allow_requantize = True  # the packaged bases are quantised already
    params.nthread = os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params) != 0:
        raise ConfigError(f"llama.cpp could not quantise {source} to {quant}")


def export_gguf(
    base_spec: str,
    adapter: str | Path | None,
    out: Path,
    *,
    merge: bool = False,
    quant: str | None = None,
    manifest: dict[str, Any] | None = None,
) -> Exported:
    """Write the student into `out`: model.gguf (+ adapter.gguf unless merged), a Modelfile
    and export.json (what was exported from what)."""
    if quant is not None and quant not in QUANTS:
        raise ConfigError(f"--quant: one of {', '.join(QUANTS)}, not {quant!r}")
    if quant is not None and not merge and adapter is not None:
        raise ConfigError("--quant needs --merge: an adapter is applied to the base as it is")
    base = model_gguf(base_spec)
    out.mkdir(parents=True, exist_ok=True)
    model = out / "model.gguf"
    adapter_file: Path | None = None
    if adapter is not None and merge:
        merged = out / "merged-f16.gguf.partial" if quant else model
        _merge(base, adapter, merged)
        if quant:
            _quantise(merged, model, quant)
            merged.unlink()
    else:
        if quant:
            _quantise(base, model, quant)
        else:
            shutil.copyfile(base, model)
        if adapter is not None:
            adapter_file = out / "adapter.gguf"
            shutil.copyfile(adapter_gguf(adapter, base), adapter_file)
    template = read_gguf(base, "base model").fields.get("tokenizer.chat_template")
    text = modelfile(
        model.name,
        adapter_file.name if adapter_file else None,
        str(template.contents()) if template is not None else None,
        0.0,
    )
    (out / "Modelfile").write_text(text, encoding="utf-8")
    doc = {
        **(manifest or {}),
        "base": base_spec,
        "adapter": str(adapter) if adapter is not None else None,
        "merge": merge,
        "quant": quant,
        "files": sorted(p.name for p in out.iterdir() if p.name != "export.json"),
    }
    (out / "export.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return Exported(model, adapter_file, out / "Modelfile", out / "export.json")

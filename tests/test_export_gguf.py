"""`stillhouse export --candidate C --format gguf` for real: a LoRA on the packaged SmolLM2 written
as GGUF (base + GGUF adapter, and merged), loaded back by llama.cpp, answering as the candidate
does in the torch engine (peft). Skipped without llama-cpp-python, except under CI.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from stillhouse.engine.export import export_gguf
from stillhouse.engine.sequence import Finished, SamplingParams

from .test_llamacpp import need_llama_cpp

MODEL = "smollm2-135m-instruct"
ASK = [{"role": "user", "content": "What is 2 + 2?"}]
SHAPES = {  # SmolLM2-135M: hidden 576, 9 heads, 3 key/value heads of 64
    "self_attn.q_proj": (576, 576),
    "self_attn.k_proj": (192, 576),
    "self_attn.v_proj": (192, 576),
    "self_attn.o_proj": (576, 576),
}


def lora(folder: Path, layers: int = 30, rank: int = 8, size: float = 0.05) -> Path:
    """A peft LoRA folder on every attention projection, with small random A and B (a trained
    adapter's B is non-zero too), written the way peft saves one."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(7)
    tensors = {}
    for layer in range(layers):
        for module, (rows, cols) in SHAPES.items():
            prefix = f"base_model.model.model.layers.{layer}.{module}"
            a = rng.normal(scale=size, size=(rank, cols)).astype(np.float32)
            b = rng.normal(scale=size, size=(rows, rank)).astype(np.float32)
            tensors[f"{prefix}.lora_A.weight"], tensors[f"{prefix}.lora_B.weight"] = a, b
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": 2 * rank,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "bias": "none",
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def same_start(got: Finished, want: Finished, n: int = 3) -> None:
    """The first `n` tokens alike, logprobs close. Not the whole answer: llama.cpp multiplies by
    8-bit activations, so a near tie later on (two tokens within ~0.2) may fall the other way; a
    wrongly converted adapter (q/k rows not permuted) already differs at the first token."""
    assert [t.token for t in got.tokens[:n]] == [t.token for t in want.tokens[:n]]
    for mine, theirs in zip(got.tokens[:n], want.tokens[:n], strict=True):
        assert mine.logprob == pytest.approx(theirs.logprob, abs=0.15)


def answered(engine: Any, params: SamplingParams) -> tuple[Finished, dict[str, str]]:
    """`engine`'s answer to ASK and, for a llama.cpp engine, its GGUF metadata; closed after."""
    try:
        metadata = dict(engine.llm.metadata) if hasattr(engine, "llm") else {}
        return engine.generate(ASK, params), metadata
    finally:
        engine.close()


@pytest.mark.slow
def test_an_exported_candidate_answers_as_it_does_in_torch(tmp_path: Path) -> None:
    need_llama_cpp()
    import torch

    from stillhouse.engine.llamacpp import LlamaCppEngine
    from stillhouse.engine.runtime import Engine

    torch.set_num_threads(1)
    adapter = lora(tmp_path / "adapter")
    params = SamplingParams(max_tokens=12)
    want, _ = answered(Engine.load(MODEL, adapter=adapter), params)

    done = export_gguf(MODEL, adapter, tmp_path / "gguf", manifest={"candidate": "cand_x"})
    assert done.adapter is not None
    got, _ = answered(LlamaCppEngine.load(str(done.model), adapter=done.adapter), params)
    plain, _ = answered(LlamaCppEngine.load(MODEL), params)
    assert plain.tokens[0].token != want.tokens[0].token  # the adapter changes the answer ...
    same_start(got, want)  # ... and the exported one changes it the same way

    modelfile = done.modelfile.read_text()
    assert "FROM ./model.gguf\nADAPTER ./adapter.gguf\n" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile
    manifest = json.loads(done.manifest.read_text())
    assert manifest["candidate"] == "cand_x"
    assert manifest["files"] == ["Modelfile", "adapter.gguf", "model.gguf"]

    merged = export_gguf(MODEL, adapter, tmp_path / "merged", merge=True)
    assert merged.adapter is None and "ADAPTER" not in merged.modelfile.read_text()
    same_start(answered(LlamaCppEngine.load(str(merged.model)), params)[0], want)


def need_converter() -> None:
    """Skip without llama.cpp's converter, except under CI: `make install` fetches it."""
    import os

    from stillhouse.engine.convert import converter_dir
    from stillhouse.errors import ConfigError

    try:
        converter_dir()
    except ConfigError as err:
        if os.environ.get("CI"):
            pytest.fail(f"{err} (make install fetches it)")
        pytest.skip(str(err))


@pytest.mark.slow
def test_a_hugging_face_folder_is_exported_and_served_on_llama_cpp(tmp_path: Path) -> None:
    """A candidate whose base is a Hugging Face folder (the packaged SmolLM2 as transformers saves
    it) exported through llama.cpp's converter: base + adapter, and merged and quantised, each
    starting its answer as the candidate does in the torch engine. A folder that is no model gets
    the converter's reason."""
    need_llama_cpp()
    need_converter()
    import torch

    from stillhouse.engine.llamacpp import LlamaCppEngine
    from stillhouse.engine.runtime import Engine
    from stillhouse.engine.sources import local_directory, resolve
    from stillhouse.errors import ConfigError

    torch.set_num_threads(1)
    folder = str(local_directory(resolve(MODEL)))  # config.json, model.safetensors, tokenizer
    adapter = lora(tmp_path / "adapter")
    params = SamplingParams(max_tokens=12)
    want, _ = answered(Engine.load(folder, adapter=adapter), params)

    done = export_gguf(folder, adapter, tmp_path / "gguf")
    assert done.adapter is not None
    got, metadata = answered(LlamaCppEngine.load(str(done.model), adapter=done.adapter), params)
    assert metadata["general.file_type"] == "1"  # F16, from fp32 weights
    same_start(got, want)
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in done.modelfile.read_text()

    merged = export_gguf(folder, adapter, tmp_path / "merged", merge=True)
    same_start(answered(LlamaCppEngine.load(str(merged.model)), params)[0], want)
    quantised = export_gguf(folder, adapter, tmp_path / "q8", merge=True, quant="q8_0")
    got, metadata = answered(LlamaCppEngine.load(str(quantised.model)), params)
    assert metadata["general.file_type"] == "7"
    # 8-bit weights move the logprobs (by 0.17 here), not the adapter's first word
    assert got.tokens[0].token == want.tokens[0].token

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"architectures": ["NoSuchForCausalLM"]}')
    with pytest.raises(ConfigError, match=r"llama\.cpp's converter could not write .*broken"):
        export_gguf(str(broken), None, tmp_path / "never")


@pytest.mark.slow
def test_export_a_candidate_from_the_command_line(tmp_path: Path) -> None:
    """`stillhouse export --candidate C --format gguf --merge --quant q8_0` on a registered
    candidate: a quantised model llama.cpp loads, a Modelfile, and the lineage beside them."""
    need_llama_cpp()
    from stillhouse.engine.llamacpp import LlamaCppEngine
    from stillhouse.registry import register_candidate
    from stillhouse.store import open_store

    from .test_cli import run
    from .test_registry import make_dataset

    run("init", cwd=tmp_path)
    adapter = lora(tmp_path / "adapter", size=0.03)
    with open_store(f"sqlite:///{tmp_path / 'stillhouse.db'}") as store:
        dataset = make_dataset(store)
        candidate = register_candidate(
            store,
            task="support",
            dataset_id=dataset.id,
            backend="local",
            base_model=MODEL,
            config={"r": 8},
            artifacts={"adapter_dir": str(adapter)},
            serving={"provider": "local", "model": MODEL, "adapter": str(adapter)},
            metrics={},
        )
    out = tmp_path / "ollama"
    args = ["--candidate", candidate.id, "--format", "gguf", "--merge", "--quant", "q8_0"]
    result = run("export", *args, "--out", str(out), cwd=tmp_path)
    assert "ollama create support -f Modelfile" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "export.json", "model.gguf"]
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["candidate"] == candidate.id and manifest["quant"] == "q8_0"
    assert [link["kind"] for link in manifest["lineage"]] == ["dataset", "candidate"]
    got, metadata = answered(
        LlamaCppEngine.load(str(out / "model.gguf")), SamplingParams(max_tokens=8)
    )
    assert metadata["general.file_type"] == "7" and got.text  # Q8_0
    # the registry records the export: its files' digests, and the lineage runs through it
    with open_store(f"sqlite:///{tmp_path / 'stillhouse.db'}") as store:
        (export,) = store.list_exports(candidate.id)
    assert export.format == "gguf" and export.config["quant"] == "q8_0" and export.config["merge"]
    digest = hashlib.sha256((out / "model.gguf").read_bytes()).hexdigest()
    assert export.files["model.gguf"]["sha256"] == digest and export.path == str(out.resolve())
    assert f"recorded as {export.id}" in result.stderr
    chain = json.loads(run("lineage", export.id, "--json", cwd=tmp_path).stdout)["chain"]
    assert [link["kind"] for link in chain] == ["dataset", "candidate", "export"]
    children = json.loads(run("lineage", candidate.id, "--json", cwd=tmp_path).stdout)["children"]
    assert [c["id"] for c in children if c["kind"] == "export"] == [export.id]
    wrong = run("export", "--candidate", "cand_nope", "--out", str(out), cwd=tmp_path, check=False)
    assert wrong.returncode == 1 and "no candidate 'cand_nope'" in wrong.stderr


@pytest.mark.slow
async def test_a_candidate_served_on_llama_cpp_has_its_adapter(tmp_path: Path) -> None:
    """A candidate's serving table (a llama-cpp student's, with the trained peft adapter) is
    deployed as the gateway does it: the adapter becomes a GGUF adapter and changes the answer."""
    need_llama_cpp()
    from stillhouse.config import ModelConfig
    from stillhouse.providers import SharedSession, build_provider

    adapter = lora(tmp_path / "adapter")
    body = {"model": MODEL, "messages": ASK, "max_tokens": 4, "logprobs": True}
    answers = []
    for serving in (
        {"provider": "local", "model": MODEL, "engine": "llama-cpp"},
        {"provider": "local", "model": MODEL, "engine": "llama-cpp", "adapter": str(adapter)},
    ):
        provider = build_provider("student@cand", ModelConfig.of_serving(serving), SharedSession())
        try:
            await provider.warm()
            answers.append(await provider.complete(body))
        finally:
            await provider.aclose()
    base, candidate = (a["choices"][0]["logprobs"]["content"][0]["token"] for a in answers)
    assert (base, candidate) == ("The", "Two")  # as the torch engine answers with and without it

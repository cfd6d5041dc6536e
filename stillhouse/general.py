"""The forgetting guard's general set: prompts from outside the task, answered by the task's
teacher and captured like any call, so curation can mix a share of them into each dataset and
evaluation can check that the student still answers them like the teacher.

Prompts come from a JSONL file the user points at (`general.prompts`) or, offline, from the
packaged Chit-Chat corpus (PyPI `chitchat-dataset`, MIT; its JSON is read without importing the
package). The calls are stored under the task `general:<task>` (a name no configured task can
have), so they never count as the task's own traffic.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import random
import time
from pathlib import Path
from typing import Any

import orjson

from .config import Config
from .errors import ConfigError, StillhouseError
from .store.base import TraceStore
from .store.records import Call, new_id

CORPUS = "chitchat_dataset"


def general_task(task: str) -> str:
    return f"general:{task}"


def corpus_prompts(count: int, seed: int = 0) -> list[str]:
    """`count` opening lines of Chit-Chat conversations, a seeded sample."""
    spec = importlib.util.find_spec(CORPUS)
    if spec is None or not spec.submodule_search_locations:
        raise StillhouseError(
            "the general set needs prompts: set general.prompts to a JSONL file, or install the "
            "packaged corpus with `pip install chitchat-dataset` (stillhouse[train])"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "dataset.json"
    data = orjson.loads(path.read_bytes())
    openers = []
    for conversation in data.values():
        messages = conversation.get("messages") or []
        if messages and messages[0]:
            text = " ".join(str(u.get("text", "")) for u in messages[0]).strip()
            if 8 <= len(text) <= 300:
                openers.append(text)
    openers = sorted(set(openers))
    return random.Random(seed).sample(openers, min(count, len(openers)))


def file_prompts(path: str) -> list[list[dict[str, Any]]]:
    """A JSONL file of prompts: each line a string, {"prompt": "..."} or {"messages": [...]}."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ConfigError(f"general.prompts: cannot read {path}: {err.strerror}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise ConfigError(f"{path}:{n}: not JSON") from None
        if isinstance(value, dict) and isinstance(value.get("messages"), list):
            out.append(value["messages"])
        elif isinstance(value, dict) and isinstance(value.get("prompt"), str):
            out.append([{"role": "user", "content": value["prompt"]}])
        elif isinstance(value, str):
            out.append([{"role": "user", "content": value}])
        else:
            raise ConfigError(f'{path}:{n}: expected a string, {{"prompt"}} or {{"messages"}}')
    return out


def _answered(store: TraceStore, task: str) -> set[bytes]:
    return {
        orjson.dumps(body.get("messages")) for body in store.answered_requests(general_task(task))
    }


def build(
    store: TraceStore, config: Config, task: str, *, count: int | None = None, concurrency: int = 8
) -> dict[str, Any]:
    """Send the general prompts not answered yet to the task's teacher and store the calls."""
    settings = config.task(task)
    wanted = count or settings.general.count
    if settings.general.prompts:
        conversations = file_prompts(settings.general.prompts)[:wanted]
    else:
        conversations = [
            [{"role": "user", "content": p}] for p in corpus_prompts(wanted, settings.curate.seed)
        ]
    seen = _answered(store, task)
    todo = [m for m in conversations if orjson.dumps(m) not in seen]
    calls = asyncio.run(_ask(config, task, todo, concurrency))
    store.insert_calls(calls)
    return {
        "task": general_task(task),
        "prompts": len(conversations),
        "answered_before": len(conversations) - len(todo),
        "answered": sum(c.status == "ok" for c in calls),
        "errors": sum(c.status != "ok" for c in calls),
    }


async def _ask(
    config: Config, task: str, conversations: list[list[dict[str, Any]]], concurrency: int
) -> list[Call]:
    from .errors import UpstreamError
    from .pricing import call_cost, price_for
    from .providers import SharedSession, build_provider

    name = config.tasks[task].teacher
    model = config.models[name]
    session = SharedSession()
    await session.open()
    gate = asyncio.Semaphore(concurrency)
    try:
        provider = build_provider(name, model, session)

        async def one(messages: list[dict[str, Any]]) -> Call:
            request = {"model": general_task(task), "messages": messages}
            started, created = time.perf_counter(), time.time()
            call = Call(
                id=new_id("call"),
                task=general_task(task),
                request=request,
                role="teacher",
                model=name,
                provider=model.provider,
                upstream_model=model.model,
                route_reason="general",
                created_at=created,
                metadata={"intent": "general", "general": task},
            )
            async with gate:
                try:
                    response = await provider.complete({**request, "model": model.model})
                except UpstreamError as err:
                    return dataclasses.replace(
                        call, status="error", error=str(err), http_status=err.status
                    )
            usage = response.get("usage") or {}
            choices = response.get("choices") or [{}]
            tokens_in, tokens_out = usage.get("prompt_tokens"), usage.get("completion_tokens")
            return dataclasses.replace(
                call,
                response=response,
                finish_reason=choices[0].get("finish_reason"),
                latency_ms=(time.perf_counter() - started) * 1000,
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                cost=call_cost(price_for(model), tokens_in, tokens_out),
            )

        return list(await asyncio.gather(*(one(m) for m in conversations)))
    finally:
        await session.close()

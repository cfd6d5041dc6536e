"""Deploying a candidate in the gateway: which provider, under which model name, answers for a
registered student, from the `serving` table the routing table carries.

- `local` (a LoRA adapter trained here): the gateway's in-process engine loads the base model with
  the candidate's adapter, in a worker thread;
- an `openai-compatible` student (vLLM) and a local adapter: vLLM's dynamic LoRA route,
  POST {base_url}/load_lora_adapter, then model = the candidate's id;
- `openai` / `azure` (a fine-tuning job's result): model = its fine_tuned_model id.

Never on the request path: a candidate that is not ready is not waited for; the student that
served before keeps serving (or, when there is none, the teacher) until it is.

A model of the gateway's own fine-tuning API (`ft:<base>:stillhouse:…`) is deployed the same way
(its serving table: the base's, with the job's adapter) but is not a task's student: a request
that names it waits for its first load, since there is no teacher to answer meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..config import Config, ModelConfig, TaskConfig
from ..errors import HTTPError, UpstreamError
from ..openai.protocol import apply_prompt
from ..providers import Provider, SharedSession, build_provider
from ..routing import Route, TaskRoute

log = logging.getLogger("stillhouse.gateway")

RETRY_AFTER = 60.0  # seconds before a candidate that failed to load is tried again
KEEP = 2  # loaded candidates kept per task: the one rolling out and the one before it
KEEP_FINE_TUNED = 2  # models of the fine-tuning API kept loaded (each holds its base model)


@dataclass(frozen=True, slots=True)
class Deployed:
    provider: Provider
    upstream_model: str  # the `model` sent upstream
    candidate: str | None  # None: the task's `student` model as configured
    prompt: dict[str, Any] | None = None  # a prompt candidate's {system, examples}
    base: str = ""  # a fine-tuned model's: the [models.x] it was trained on (its price)

    def body(self, forward: dict[str, Any]) -> dict[str, Any]:
        """The upstream request as this deployment sends it (a prompt candidate's prompt
        applied to the messages)."""
        if not self.prompt or not isinstance(forward.get("messages"), list):
            return forward
        return {**forward, "messages": apply_prompt(self.prompt, forward["messages"])}


async def load_vllm_adapter(
    session: SharedSession, student: ModelConfig, name: str, adapter: str
) -> None:
    """Load `adapter` into a running vLLM server under `name` (vLLM must run with
    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True). Loading one it already has is not an error."""
    from ..providers.base import post, secret_header, timeouts

    assert student.base_url is not None
    headers = {"content-type": "application/json", **student.headers}
    key = secret_header(student, name)
    if key:
        headers["authorization"] = f"Bearer {key}"
    url = student.base_url.rstrip("/") + "/load_lora_adapter"
    body = orjson.dumps({"lora_name": name, "lora_path": adapter})
    try:
        response = await post(
            session.session, url, body, headers, timeouts(student)[0], model_name=name
        )
    except UpstreamError as err:
        if err.status == 400 and "already" in err.message.lower():
            return
        raise
    response.release()


class FineTuned:
    """The fine-tuning API's models: {name: (base model, serving table)} as the job runner
    publishes them from the store (swapped by reference, off the request path), each loaded on
    first use and kept (the KEEP_FINE_TUNED used last)."""

    def __init__(self, session: SharedSession) -> None:
        self.session = session
        self.known: Mapping[str, tuple[str, dict[str, Any]]] = {}
        self._ready: OrderedDict[str, Deployed] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    def publish(self, known: Mapping[str, tuple[str, dict[str, Any]]]) -> None:
        self.known = known

    def get(self, name: str) -> Deployed | None:
        found = self._ready.get(name)
        if found is not None:
            self._ready.move_to_end(name)
        return found

    async def ready(self, name: str) -> None:
        """Load `name` when it is a fine-tuned model not loaded yet (in a worker thread: the
        loop goes on serving others)."""
        if name in self._ready or name not in self.known:
            return
        async with self._locks.setdefault(name, asyncio.Lock()):
            if name in self._ready:
                return
            base, serving = self.known[name]
            model = ModelConfig.of_serving(serving)
            provider = build_provider(name, model, self.session)
            try:
                await provider.warm()
            except Exception as err:
                log.exception("loading fine-tuned model %s failed", name)
                raise HTTPError(f"the fine-tuned model {name} could not be loaded: {err}") from None
            self._ready[name] = Deployed(provider, model.model, None, base=base)
            while len(self._ready) > KEEP_FINE_TUNED:
                _, old = self._ready.popitem(last=False)
                await old.provider.aclose()

    async def aclose(self) -> None:
        while self._ready:
            await self._ready.popitem()[1].provider.aclose()


class Deployments:
    """The candidates this gateway has deployed, loaded on first need and kept (KEEP per task),
    and the fine-tuning API's models (`fine_tuned`)."""

    def __init__(
        self, config: Config, providers: Mapping[str, Provider], session: SharedSession
    ) -> None:
        self.config = config
        self.providers = providers
        self.session = session
        self.fine_tuned = FineTuned(session)
        self._ready: dict[str, Deployed] = {}
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._failed: dict[str, float] = {}  # candidate -> when it may be tried again
        self._loaded: dict[str, list[str]] = {}  # task -> its ready candidates, oldest first

    def static(self, task: TaskConfig, candidate: str | None = None) -> Deployed:
        """The task's `student` model as configured (answering for `candidate` when that one
        was registered without a serving table of its own)."""
        assert task.student is not None
        model = self.config.models[task.student].model
        return Deployed(self.providers[task.student], model, candidate)

    def pick(
        self, name: str, task: TaskConfig, entry: TaskRoute | None, route: Route
    ) -> Deployed | None:
        """What answers a student route now; None when nothing for it is ready (ask the
        teacher). Starts loading the route's candidate when it is new; meanwhile the serving
        student a retrained candidate is to replace keeps its sessions. (Never a candidate
        that was rolled back: only the incumbent named by the routing table.)"""
        candidate = route.candidate
        if entry is None or candidate is None:
            return self.static(task)
        own = candidate == entry.candidate
        serving = entry.serving if own else entry.incumbent_serving
        if not serving:  # registered without a serving table: the student model as configured
            return self.static(task, candidate)
        found = self._ensure(name, task, candidate, serving)
        if found is None and own and entry.incumbent is not None and entry.incumbent_serving:
            found = self._ensure(name, task, entry.incumbent, entry.incumbent_serving)
        return found

    def _ensure(
        self, name: str, task: TaskConfig, candidate: str, serving: Mapping[str, Any]
    ) -> Deployed | None:
        found = self._ready.get(candidate)
        if found is not None:
            return found
        if candidate not in self._loading and time.monotonic() >= self._failed.get(candidate, 0):
            job = asyncio.get_running_loop().create_task(
                self._load(name, task, candidate, dict(serving))
            )
            self._loading[candidate] = job
        return None

    async def _load(
        self, name: str, task: TaskConfig, candidate: str, serving: dict[str, Any]
    ) -> None:
        try:
            deployed = await self._deploy(task, candidate, serving)
        except Exception:
            log.exception("deploying candidate %s for task %s failed", candidate, name)
            self._failed[candidate] = time.monotonic() + RETRY_AFTER
            return
        finally:
            self._loading.pop(candidate, None)
        self._ready[candidate] = deployed
        log.info("candidate %s of task %s is deployed", candidate, name)
        loaded = self._loaded.setdefault(name, [])
        loaded.append(candidate)
        while len(loaded) > KEEP:
            await self._retire(loaded.pop(0))

    async def _deploy(self, task: TaskConfig, candidate: str, serving: dict[str, Any]) -> Deployed:
        assert task.student is not None
        student = self.config.models[task.student]
        adapter = serving.get("adapter")
        if adapter and student.provider == "openai-compatible":
            await load_vllm_adapter(self.session, student, candidate, str(adapter))
            return Deployed(self.providers[task.student], candidate, candidate)
        model = ModelConfig.of_serving(serving)
        provider = build_provider(f"{task.student}@{candidate}", model, self.session)
        await provider.warm()  # a local model loads in a worker thread, off the loop
        return Deployed(provider, model.model, candidate, serving.get("prompt"))

    async def _retire(self, candidate: str) -> None:
        deployed = self._ready.pop(candidate, None)
        if deployed is not None:
            await deployed.provider.aclose()

"""One request's plan, decided once: the task, the route (mode, rollout share, per-intent rules,
a deployment that is ready), the confidence threshold it falls back under, the call to capture,
the body and headers to send. Everything after reads the plan; nothing decides the route again.

Pure but for the deployments it asks (never waited for: a candidate still loading is not picked).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from ..config import Config
from ..errors import NotFound
from ..openai.protocol import ChatCompletionRequest, constrain
from ..providers import Provider
from ..routing import Route, RoutingTable, TaskRoute, choose_route, fallback_threshold, intent_rules
from ..store.records import Call, new_id
from .deploy import Deployed, Deployments
from .overhead import UpstreamClock
from .protocol import call_metadata, header_value, session_of, task_of, upstream_body


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request on its way: the call to capture, who answers it with which body, the
    headers the client gets, and the threshold under which a student answer falls back."""

    call: Call
    route: Route
    provider: Provider
    forward: dict[str, Any]
    checked: ChatCompletionRequest
    started: float  # perf_counter when the request arrived: what the user waits is from here
    headers: dict[str, str]
    entry: TaskRoute | None = None
    threshold: float | None = None
    intent: str | None = None  # the request's intent, where known: its threshold may be its own
    hide_logprobs: bool = False  # the gateway asked for logprobs the client did not
    clock: UpstreamClock = field(default_factory=UpstreamClock)  # kept by replace(): shared

    def replace(self, **changes: Any) -> Exchange:
        return dataclasses.replace(self, **changes)


def ask_for_logprobs(forward: dict[str, Any]) -> bool:
    """Ask a student for its token logprobs when the route falls back on confidence; True when
    the client had not asked, so they are taken out of what it gets back."""
    if forward.get("logprobs"):
        return False
    forward["logprobs"] = True
    # one alternative too: llama-cpp-python's server returns no logprobs without top_logprobs
    forward.setdefault("top_logprobs", 1)
    return True


def without_logprobs(payload: dict[str, Any]) -> dict[str, Any]:
    """A response or stream chunk without the logprobs the gateway asked for on its own."""
    choices = payload.get("choices")
    if not isinstance(choices, list) or not any(
        isinstance(c, dict) and c.get("logprobs") is not None for c in choices
    ):
        return payload
    cleaned = [{**c, "logprobs": None} if isinstance(c, dict) else c for c in choices]
    return {**payload, "choices": cleaned}


def shown(x: Exchange, payload: dict[str, Any]) -> dict[str, Any]:
    """What the client gets of an upstream payload."""
    return without_logprobs(payload) if x.hide_logprobs else payload


class Planner:
    def __init__(
        self,
        config: Config,
        providers: dict[str, Provider],
        routing: RoutingTable,
        deployments: Deployments,
    ) -> None:
        self.config = config
        self.providers = providers
        self.routing = routing
        self.deployments = deployments

    def plan(
        self,
        body: dict[str, Any],
        checked: ChatCompletionRequest,
        request_headers: Any,
        started: float,
        created_at: float,
        own: dict[str, Any] | None = None,
    ) -> Exchange:
        """`own`: metadata keys of the gateway's for the call (e.g. the Responses API's id),
        set over the caller's after their reserved keys were moved under `client`."""
        task_name = task_of(checked, request_headers)
        task = self.config.tasks.get(task_name)
        call_id = new_id("call")
        session_key = session_of(checked, request_headers)
        entry: TaskRoute | None = None
        intent: str | None = None
        deployed: Deployed | None = None
        if task is None:
            # not a task: a model of the fine-tuning API, captured under its own name
            deployed = self.deployments.fine_tuned.get(task_name)
            if deployed is None or task_name != checked.model:
                known = ", ".join(sorted(self.config.tasks)) or "none configured"
                raise NotFound(
                    f"unknown task '{task_name}' (tasks: {known}); name the task in `model`, "
                    "the X-Stillhouse-Task header or metadata.task, or a fine-tuned model",
                    param="model",
                    code="model_not_found",
                )
            route = Route("student", deployed.base, "fine_tuned")
        else:
            entry = self.routing.get(task_name)
            route = choose_route(task, entry, name=task_name, key=session_key or call_id)
            # per-intent rules; the intent comes from memory (metadata.intent or the snapshot's
            # model)
            intent = self.routing.intent_of(task_name, checked.metadata, body)
            route = intent_rules(task, entry, route, intent, name=task_name)
            if route.role == "student":
                deployed = self.deployments.pick(task_name, task, entry, route)
                if deployed is None:  # its candidate is loading and no student served before
                    route = Route("teacher", task.teacher, "deploying")
        model = self.config.models[route.model]
        metadata = call_metadata(checked.metadata)  # a caller's reserved keys: under `client`
        metadata.update(own or {})
        if deployed is not None and deployed.candidate is not None:
            metadata["candidate"] = deployed.candidate
        if intent is not None and "intent" not in metadata:  # the caller's own is kept as sent
            metadata["routed_intent"] = intent
        call = Call(
            id=call_id,
            task=task_name,
            request=body,
            role=route.role,
            model=route.model,
            provider=model.provider,
            upstream_model=deployed.upstream_model if deployed else model.model,
            route_reason=route.reason,
            stream=bool(checked.stream),
            created_at=created_at,
            session_key=session_key,
            metadata=metadata,
        )
        headers = {
            "x-stillhouse-call-id": call.id,
            "x-stillhouse-task": task_name,
            "x-stillhouse-route": route.role,
        }
        if intent is not None:
            headers["x-stillhouse-intent"] = header_value(intent)
        if "candidate" in metadata:
            headers["x-stillhouse-candidate"] = header_value(str(metadata["candidate"]))
        forward = upstream_body(body, call.upstream_model)
        if deployed is not None:
            forward = deployed.body(forward)
        threshold = None
        asked = False  # logprobs the gateway asked for and the client did not
        if task is not None:  # a task's student: its schema, its threshold
            if route.role == "student" and task.constrain_student:
                constrain(forward, task.response_schema, task_name)
            threshold = fallback_threshold(task, entry, route, intent)
            if threshold is not None or (route.role == "teacher" and task.routing.teacher_logprobs):
                asked = ask_for_logprobs(forward)
        return Exchange(
            call=call,
            route=route,
            provider=deployed.provider if deployed else self.providers[route.model],
            forward=forward,
            checked=checked,
            started=started,
            headers=headers,
            entry=entry,
            threshold=threshold,
            intent=intent,
            hide_logprobs=asked,
        )

    def teacher_call(self, of: Call, reason: str, link: str) -> tuple[Call, dict[str, Any]]:
        """The teacher's call for a student's (a fallback or a shadow): a call of its own linked
        to the student's (`metadata.<link>`), and its non-streaming body from the request as
        sent (asking for logprobs where the task captures the teacher's)."""
        task = self.config.tasks[of.task]
        teacher = task.teacher
        model = self.config.models[teacher]
        call = dataclasses.replace(
            of,
            id=new_id("call"),
            role="teacher",
            model=teacher,
            provider=model.provider,
            upstream_model=model.model,
            route_reason=reason,
            stream=False,
            created_at=time.time(),
            metadata={**of.metadata, link: of.id},
        )
        forward = upstream_body(of.request, model.model)
        forward.pop("stream", None)
        forward.pop("stream_options", None)
        if task.routing.teacher_logprobs:
            ask_for_logprobs(forward)
        return call, forward

    def teacher(self, of: Exchange, reason: str, link: str) -> Exchange:
        """`of` handed to the teacher (`teacher_call`), answered under route `reason`."""
        call, forward = self.teacher_call(of.call, reason, link)
        return of.replace(
            call=call,
            route=Route("teacher", call.model, reason),
            provider=self.providers[call.model],
            forward=forward,
            headers={**of.headers, "x-stillhouse-route": reason},
            threshold=None,
            hide_logprobs=bool(forward.get("logprobs")) and not of.checked.logprobs,
        )

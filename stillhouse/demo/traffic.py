"""Simulated users: each sends one request of the demo's task (a ticket, a message) through the
gateway with the official openai SDK, as its own session, several at once (the local engine
batches concurrent requests)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import openai

from .tasks import TRIAGE, DemoTask


@dataclass(frozen=True)
class Reply:
    route: str  # x-stillhouse-route: teacher, student, fallback, deploying, ...
    content: str
    error: str | None = None


class Users:
    def __init__(
        self,
        base_url: str,
        *,
        seed: int = 0,
        concurrency: int = 8,
        intents: int = 22,
        task: DemoTask = TRIAGE,
    ) -> None:
        self.client = openai.OpenAI(base_url=base_url, api_key="demo", max_retries=0, timeout=900)
        self.task = task
        self.examples = task.examples(seed, task.labels_for(intents))
        self.concurrency = concurrency
        self.sent = 0

    def one(self) -> Reply:
        example = self.examples.next()
        self.sent += 1
        session = f"user-{self.sent}"
        try:
            raw = self.client.chat.completions.with_raw_response.create(
                model=self.task.name,
                messages=example.messages,  # type: ignore[arg-type]
                user=session,
                max_tokens=self.task.max_tokens,
                temperature=0,
                metadata={"intent": example.intent},
            )
        except openai.OpenAIError as err:
            return Reply("error", "", f"{type(err).__name__}: {err}")
        reply = raw.parse()
        return Reply(
            raw.headers.get("x-stillhouse-route", "?"), reply.choices[0].message.content or ""
        )

    def send(self, n: int, done: Callable[[Reply], None] | None = None) -> list[Reply]:
        """n users at up to `concurrency` at a time; `done` is called as each is answered."""
        out: list[Reply] = []

        def task() -> Reply:
            reply = self.one()
            if done is not None:
                done(reply)
            return reply

        with ThreadPoolExecutor(self.concurrency) as pool:
            for reply in pool.map(lambda _: task(), range(n)):
                out.append(reply)
        return out

"""The demo's built-in tasks, each one app's traffic: its name and description, the JSON Schema it
declares, and a seeded generator of simulated users' requests with the answer a perfect model
gives (the tests' tiny teachers learn it). `triage` is the default; `extract` has another shape.
The gates are never a task's: every task runs under the same tier, untouched."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from . import extract, tickets


@dataclass(frozen=True)
class Example:
    """One simulated user's request: its label (`metadata.intent`), messages, perfect answer."""

    intent: str
    messages: list[dict[str, Any]]
    answer: str


@dataclass(frozen=True)
class DemoTask:
    name: str
    description: str  # the task's description in stillhouse.toml
    labels: tuple[str, ...]  # intents or message kinds; `--intents N` takes the first N
    schema: Callable[[int], dict[str, Any]]  # the response_schema for the first N labels
    make: Callable[[int, int], Callable[[], Example]]  # (seed, N) -> the next example, seeded
    noun: str  # what one request is, for progress lines
    max_tokens: int  # what the users ask for: room for the longest answer with any tokenizer
    # train.max_length its conversations need (system prompt, message, answer) with the
    # student's tokenizer: a training setting, never a gate
    max_length: int

    def examples(self, seed: int = 0, labels: int | None = None) -> Examples:
        return Examples(self.make(seed, labels or len(self.labels)))

    def labels_for(self, n: int) -> int:
        """How many labels a profile asking for `n` gets: at most the task's."""
        return min(n, len(self.labels))


class Examples:
    """A task's examples, one per `next()`, safe to share among the simulated users' threads."""

    def __init__(self, step: Callable[[], Example]) -> None:
        self.step = step
        self.lock = threading.Lock()

    def next(self) -> Example:
        with self.lock:
            return self.step()

    def __iter__(self) -> Iterator[Example]:
        while True:
            yield self.next()


def _triage(seed: int, labels: int) -> Callable[[], Example]:
    gen = tickets.Tickets(seed, labels)

    def step() -> Example:
        intent, messages = gen.next()
        return Example(intent, messages, tickets.label(intent))

    return step


def _extract(seed: int, labels: int) -> Callable[[], Example]:
    gen = extract.Messages(seed, labels)
    return lambda: Example(*gen.next())


TRIAGE = DemoTask(
    name="triage",
    description="Support-ticket triage: one JSON object with the intent and priority",
    labels=tuple(tickets.INTENTS),
    schema=tickets.schema,
    make=_triage,
    noun="tickets",
    max_tokens=64,
    max_length=256,
)
EXTRACT = DemoTask(
    name="extract",
    description="Field extraction: the order number, amount, currency and date a customer's "
    "message gives, each null when it does not",
    labels=tuple(extract.KINDS),
    schema=lambda _labels: extract.schema(),
    make=_extract,
    noun="messages",
    max_tokens=96,
    max_length=512,
)
TASKS: dict[str, DemoTask] = {t.name: t for t in (TRIAGE, EXTRACT)}

"""One request's life in the engine: its sampling parameters, the events it emits (text deltas
with token logprobs, then how it finished), its counters, and its decoding state (`Decoding`:
tokens so far, text held back for stop strings, the callback it answers through).

No torch here: the runtime (runtime.py) owns the model and feeds token ids and logprobs in.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import BadRequest

DEFAULT_MAX_TOKENS = 512


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_logprobs: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # The JSON Schema (as text) the answer must follow, token by token, on either engine
    # (grammar.response_schema reads it from `response_format`); None: free.
    json_schema: str | None = None


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Delta:
    """New text for a request and the tokens generated since the last Delta."""

    text: str
    tokens: tuple[TokenLogprob, ...]


@dataclass(frozen=True, slots=True)
class Finished:
    text: str  # the whole answer, cut before a stop string
    tokens: tuple[TokenLogprob, ...]  # the tokens of `text`
    token_ends: tuple[int, ...]  # where each token's text ends in `text`
    finish_reason: str  # stop | length
    prompt_tokens: int
    completion_tokens: int


Event = Delta | Finished | BaseException


@dataclass(eq=False)
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    emit: Callable[[Event], None]
    grammar: Any = None  # params.json_schema compiled for the engine's tokenizer
    cancelled: bool = False

    def cancel(self) -> None:
        """Stop generating for this request at the next step (its caller went away)."""
        self.cancelled = True


@dataclass
class EngineStats:
    """Counters for /healthz and the benchmark; `batch_sizes` counts decode steps by how many
    requests each step advanced together."""

    requests: int = 0
    steps: int = 0
    tokens: int = 0
    max_batch_size: int = 0
    batch_sizes: Counter[int] = field(default_factory=Counter)

    def step(self, size: int) -> None:
        self.steps += 1
        self.tokens += size
        self.batch_sizes[size] += 1
        self.max_batch_size = max(self.max_batch_size, size)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "steps": self.steps,
            "tokens": self.tokens,
            "max_batch_size": self.max_batch_size,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
        }


class Runtime(Protocol):
    """What the OpenAI layer (completions.py, server.py) needs of an engine: the torch engine
    (runtime.Engine) and the llama.cpp engine (llamacpp.LlamaCppEngine) both offer it."""

    name: str
    stats: EngineStats

    @property
    def prefix_tokens_reused(self) -> int: ...

    def prompt_ids(self, messages: list[dict[str, Any]], tools: Any = None) -> list[int]: ...

    def submit(
        self, prompt_ids: list[int], params: SamplingParams, emit: Callable[[Event], None]
    ) -> Request: ...

    def close(self) -> None: ...


def stop_holdback(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters might be the start of a stop string (so not yet sent)."""
    keep = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), keep, -1):
            if text.endswith(stop[:n]):
                keep = n
                break
    return keep


class Decoding:
    """One request's progress through a batch: its tokens, text and what was already sent."""

    def __init__(
        self, request: Request, tokenizer: Any, eos_ids: Container[int], limit: int
    ) -> None:
        self.request = request
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.max_tokens = min(request.params.max_tokens, limit)
        self.stops = request.params.stop
        self.ids: list[int] = []
        self.entries: list[TokenLogprob] = []
        self.ends: list[int] = []
        self.sent_chars = 0
        self.sent_tokens = 0
        self.generated = 0
        self.done = False
        self.matcher: Any = None  # where the row stands in its grammar, when it has one
        self.generator: Any = None  # the torch engine's seeded generator (runtime._sequence)

    def _token_text(self, token_id: int) -> str:
        return str(self.tokenizer.decode([token_id]))

    def add(self, token_id: int, logprob: float, top: list[tuple[int, float]]) -> None:
        self.generated += 1
        if token_id in self.eos_ids:
            self._finish("stop", self._text())
            return
        self.ids.append(token_id)
        entry = TokenLogprob(
            self._token_text(token_id),
            logprob,
            tuple((self._token_text(t), lp) for t, lp in top),
        )
        self.entries.append(entry)
        text = self._text()
        self.ends.append(len(text))
        if self.stops:
            search_from = max(0, self.sent_chars - max(len(s) for s in self.stops))
            hits = [i for i in (text.find(s, search_from) for s in self.stops) if i >= 0]
            if hits:
                self._finish("stop", text[: max(min(hits), self.sent_chars)], cut=True)
                return
        if len(self.ids) >= self.max_tokens:
            self._finish("length", text)
            return
        safe = len(text) - stop_holdback(text, self.stops)
        while safe > self.sent_chars and text[safe - 1] == "\ufffd":
            safe -= 1  # an incomplete UTF-8 sequence: wait for the token that completes it
        if safe > self.sent_chars:
            self._send(text[self.sent_chars : safe], len(self.entries))

    def _text(self) -> str:
        return str(self.tokenizer.decode(self.ids, skip_special_tokens=True))

    def _send(self, text: str, upto: int) -> None:
        self.request.emit(Delta(text, tuple(self.entries[self.sent_tokens : upto])))
        self.sent_chars += len(text)
        self.sent_tokens = upto

    def _finish(self, reason: str, text: str, cut: bool = False) -> None:
        self.done = True
        kept = len(self.entries)
        if cut:
            # A token belongs to the answer when it starts before the cut: the stop string's
            # tokens and anything after them do not.
            starts = [0, *self.ends[:-1]]
            kept = sum(1 for start in starts if start < len(text))
        if len(text) > self.sent_chars or kept > self.sent_tokens:
            self._send(text[self.sent_chars :], max(kept, self.sent_tokens))
        ends = tuple(min(e, len(text)) for e in self.ends[:kept])
        self.request.emit(
            Finished(
                text=text,
                tokens=tuple(self.entries[:kept]),
                token_ends=ends,
                finish_reason=reason,
                prompt_tokens=len(self.request.prompt_ids),
                completion_tokens=self.generated,
            )
        )


def run_to_end(
    submit: Callable[[list[int], SamplingParams, Callable[[Event], None]], Any],
    prompt_ids: list[int],
    params: SamplingParams,
) -> Finished:
    """Submit one request to an engine (either engine's `submit`) and wait for how it finished:
    the blocking `generate` both engines offer to scripts and benchmarks."""
    done = threading.Event()
    result: list[Event] = []

    def emit(event: Event) -> None:
        if not isinstance(event, Delta):
            result.append(event)
            done.set()

    submit(prompt_ids, params, emit)
    done.wait()
    if isinstance(result[0], BaseException):
        raise result[0]
    assert isinstance(result[0], Finished)
    return result[0]


def check_fits(prompt_ids: Sequence[int], context: int) -> None:
    """A prompt that leaves no room to answer is the client's mistake: a 400 naming it."""
    if len(prompt_ids) >= context:
        raise BadRequest(
            f"the prompt has {len(prompt_ids)} tokens; this model's context is {context}",
            param="messages",
            code="context_length_exceeded",
        )

"""The llama.cpp engine: a GGUF model (plus a LoRA adapter) run by llama-cpp-python, behind the
same surface as the torch engine (`prompt_ids`, `submit`, `close`), so the `local` provider and
`serve-model` speak the same wire format, logprobs and `stillhouse.confidence` with either.

One worker thread owns the llama.cpp context and answers queued requests one at a time; it never
touches an event loop. The context keeps the last request's tokens, so a request that opens like
the one before it (a task's system prompt) prefills only what follows that opening.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import random
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import AdapterError, BadRequest, ConfigError
from ..toolcalls import chat_messages
from .gguf_files import adapter_gguf, model_gguf
from .sequence import (
    Decoding,
    EngineStats,
    Event,
    Finished,
    Request,
    SamplingParams,
    check_fits,
    run_to_end,
)

log = logging.getLogger("stillhouse.engine")

INSTALL = "pip install 'stillhouse[cpu]'"
DEFAULT_CONTEXT = 4096


def import_llama_cpp() -> Any:
    """The llama_cpp module, or ConfigError naming the extra that installs it."""
    try:
        import llama_cpp
    except ImportError:
        raise ConfigError(
            f"the llama-cpp engine needs llama-cpp-python: {INSTALL} (it compiles llama.cpp, "
            "5-9 minutes on 2 cores)"
        ) from None
    return llama_cpp


class _Detokenizer:
    """The two `decode` calls Decoding makes, on llama.cpp's vocabulary."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        raw = self.llm.detokenize(ids, special=not skip_special_tokens)
        return str(raw.decode("utf-8", errors="replace"))


class _EndOfGeneration:
    """`token in eos_ids` for Decoding: llama.cpp knows every end-of-generation token."""

    def __init__(self, llama_cpp: Any, llm: Any) -> None:
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._is_eog = llama_cpp.llama_vocab_is_eog

    def __contains__(self, token: object) -> bool:
        return isinstance(token, int) and bool(self._is_eog(self._vocab, token))


class Grammars:
    """A JSON Schema (as text: `SamplingParams.json_schema`, the one reading of `response_format`
    in grammar.py) -> a llama.cpp grammar, compiled once per distinct schema."""

    def __init__(self, llama_cpp: Any, size: int = 32) -> None:
        from llama_cpp.llama_grammar import LlamaGrammar

        self._grammar = LlamaGrammar
        self._size = size
        self._cache: OrderedDict[str, Any] = OrderedDict()

    def __call__(self, schema: str | None) -> Any:
        if schema is None:
            return None
        key = schema
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        try:
            grammar = self._grammar.from_json_schema(key, verbose=False)
        except Exception as err:  # the schema converter raises ValueError, KeyError, ...
            raise BadRequest(
                f"response_format: this JSON Schema cannot be turned into a grammar: {err}",
                param="response_format",
                code="invalid_value",
            ) from None
        self._cache[key] = grammar
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return grammar


class LlamaCppEngine:
    """A loaded GGUF model and the worker thread that answers its requests in turn."""

    def __init__(self, llm: Any, *, name: str = "local") -> None:
        import numpy as np

        llama_cpp = import_llama_cpp()
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.llm = llm
        self.name = name
        self.stats = EngineStats()
        self.context = int(llm.n_ctx())
        self._np = np
        self._llama_cpp = llama_cpp
        self._tokenizer = _Detokenizer(llm)
        self._eog = _EndOfGeneration(llama_cpp, llm)
        self._grammars = Grammars(llama_cpp)
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ConfigError(f"model '{name}': the GGUF file carries no chat template")
        eos, bos = llm.token_eos(), llm.token_bos()
        self._format = Jinja2ChatFormatter(
            template,
            eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
        )
        self._reused = 0
        self._queue: queue.Queue[Request | None] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"llama-{name}", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    @classmethod
    def load(
        cls,
        spec: str,
        *,
        adapter: str | Path | None = None,
        threads: int | None = None,
        context: int = DEFAULT_CONTEXT,
        name: str | None = None,
    ) -> LlamaCppEngine:
        """Load `spec` (a packaged name or a .gguf file) with a LoRA adapter (a GGUF adapter,
        or a peft folder converted to one) on top."""
        llama_cpp = import_llama_cpp()
        model = model_gguf(spec)
        lora = str(adapter_gguf(adapter, model)) if adapter is not None else None
        try:
            llm = llama_cpp.Llama(
                model_path=str(model),
                lora_path=lora,
                n_ctx=context,
                n_batch=512,
                n_threads=threads or os.cpu_count() or 1,
                verbose=False,
            )
        except (ValueError, RuntimeError) as err:
            if lora is not None:
                raise AdapterError(f"adapter {adapter}: llama.cpp refused it: {err}") from None
            raise ConfigError(f"model '{spec}': llama.cpp cannot load {model}: {err}") from None
        return cls(llm, name=name or spec)

    @property
    def prefix_tokens_reused(self) -> int:
        return self._reused

    # -- requests ----------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict[str, Any]], tools: Any = None) -> list[int]:
        """The GGUF's chat template applied to `messages`, ending with the assistant's turn; tools
        and tool calls rendered as training rendered them (toolcalls.chat_messages)."""
        plain = chat_messages(messages, tools)
        prompt = self._format(messages=plain).prompt  # type: ignore[arg-type]
        return [int(t) for t in self.llm.tokenize(prompt.encode(), add_bos=False, special=True)]

    def submit(
        self, prompt_ids: list[int], params: SamplingParams, emit: Callable[[Event], None]
    ) -> Request:
        """Queue a request; `emit` is called from the worker thread with each Delta, then one
        Finished (or an exception). A schema llama.cpp cannot compile raises BadRequest here."""
        if self._closed:
            raise RuntimeError("engine is closed")
        check_fits(prompt_ids, self.context)
        self._grammars(params.json_schema)  # compiled now, so a bad one is a 400
        request = Request(prompt_ids, params, emit)
        self._queue.put(request)
        return request

    def generate(
        self, messages: list[dict[str, Any]], params: SamplingParams | None = None
    ) -> Finished:
        """Blocking convenience for scripts and benchmarks."""
        return run_to_end(self.submit, self.prompt_ids(messages), params or SamplingParams())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(30)
        atexit.unregister(self.close)
        with contextlib.suppress(Exception):
            self.llm.close()

    # -- the worker --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            request = self._queue.get()
            if request is None:
                return
            if request.cancelled:
                continue
            try:
                self._answer(request)
            except Exception as err:  # one bad request must not take the engine down
                log.exception("llama.cpp failed on a request")
                with contextlib.suppress(Exception):
                    request.emit(err)

    def _logprobs(self, token: int, k: int) -> tuple[float, list[tuple[int, float]]]:
        """The chosen token's logprob and the top k, from the logits it was sampled from
        (log-softmax of the model's own logits, before temperature, as the torch engine)."""
        np = self._np
        pointer = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(self.llm.n_vocab(),)).astype(np.float64)
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())
        top: list[tuple[int, float]] = []
        if k:
            best = np.argpartition(-logprobs, k)[:k]
            best = best[np.argsort(-logprobs[best])]
            top = [(int(i), float(logprobs[i])) for i in best]
        return float(logprobs[token]), top

    def _answer(self, request: Request) -> None:
        params = request.params
        self.stats.requests += 1
        seq = Decoding(request, self._tokenizer, self._eog, self.context - len(request.prompt_ids))
        held = list(self.llm.input_ids[: self.llm.n_tokens])
        shared = 0
        for a, b in zip(held, request.prompt_ids, strict=False):
            if a != b:
                break
            shared += 1
        self._reused += max(0, min(shared, len(request.prompt_ids) - 1))
        sampled = params.temperature > 0
        if sampled:  # the context keeps its seed: an unseeded request draws a fresh one
            self.llm.set_seed(params.seed if params.seed is not None else random.getrandbits(31))
        tokens = self.llm.generate(
            request.prompt_ids,
            temp=params.temperature if sampled else 0.0,
            top_p=params.top_p if sampled else 1.0,
            top_k=0,
            min_p=0.0,
            typical_p=1.0,
            repeat_penalty=1.0,
            grammar=self._grammars(params.json_schema),
        )
        try:
            for token in tokens:
                if request.cancelled:
                    return
                self.stats.step(1)
                logprob, top = self._logprobs(int(token), params.top_logprobs)
                seq.add(int(token), logprob, top)
                if seq.done:
                    return
        finally:
            tokens.close()

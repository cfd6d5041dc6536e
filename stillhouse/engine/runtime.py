"""The local model runtime: one causal LM (plus an optional LoRA adapter) decoding many requests
at once.

One worker thread owns the model. It takes every waiting request (up to `max_batch`), left-pads
them into one batch and runs a decode loop with a KV cache, handing each request its text and
token logprobs as they come through a callback. It never touches an event loop: async callers pass
a callback that is safe to call from another thread.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..toolcalls import chat_messages
from .grammar import Grammars, advance, mask_rows, matcher
from .kvcache import (
    PrefixCache,
    cache_kwarg,
    cache_of,
    merge,
    plain,
    repeat_rows,
    trim_padding,
)
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
from .sources import local_directory, resolve

log = logging.getLogger("stillhouse.engine")


class Engine:
    """A loaded model and the worker thread that batches its requests."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "local",
        max_batch: int = 8,
        gather_ms: float = 5.0,
        prefix_cache: bool = True,
    ) -> None:
        self.model = model.eval()
        self.prefixes = PrefixCache(self.model) if prefix_cache else None
        self.cache_kwarg = cache_kwarg(self.model)
        self.tokenizer = tokenizer
        self.name = name
        self.max_batch = max_batch
        self.gather = gather_ms / 1000
        self.stats = EngineStats()
        self.context = int(getattr(model.config, "max_position_embeddings", 0) or 4096)
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self.eos_ids = eos_ids
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids)
        self.grammars = Grammars(tokenizer, int(model.config.vocab_size), eos_ids)
        self._queue: queue.Queue[Request | None] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)
        self._thread.start()
        # A worker thread still alive while the interpreter tears torch down aborts the process
        # ("terminate called without an active exception"): stop it first.
        atexit.register(self.close)

    @classmethod
    def load(
        cls,
        spec: str,
        *,
        adapter: str | Path | None = None,
        threads: int | None = None,
        dtype: str = "float32",
        **kwargs: Any,
    ) -> Engine:
        """Load `spec` (packaged name, directory, .gguf or hub id), with a LoRA adapter on top."""
        model, tokenizer = load_model(spec, adapter=adapter, threads=threads, dtype=dtype)
        return cls(model, tokenizer, name=kwargs.pop("name", spec), **kwargs)

    @property
    def prefix_tokens_reused(self) -> int:
        return self.prefixes.hits if self.prefixes else 0

    # -- requests ----------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict[str, Any]], tools: Any = None) -> list[int]:
        """The chat template applied to `messages`, ending with the assistant's turn; tools and
        tool calls rendered as training rendered them (toolcalls.chat_messages)."""
        encoded = self.tokenizer.apply_chat_template(
            chat_messages(messages, tools), add_generation_prompt=True, tokenize=True
        )
        # transformers 5 returns a BatchEncoding here, 4.x a plain list
        ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
        return [int(i) for i in ids]

    def submit(
        self, prompt_ids: list[int], params: SamplingParams, emit: Callable[[Event], None]
    ) -> Request:
        """Queue a request; `emit` is called from the worker thread with each Delta, then one
        Finished (or an exception). A JSON Schema is compiled here (milliseconds; cached), so a
        refused one is a BadRequest now, not an error in the decode loop."""
        if self._closed:
            raise RuntimeError("engine is closed")
        check_fits(prompt_ids, self.context)
        grammar = self.grammars.compile(params.json_schema) if params.json_schema else None
        request = Request(prompt_ids, params, emit, grammar)
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

    # -- the worker --------------------------------------------------------------------------
    def _take(self, first: Request | None, room: int, wait: float) -> list[Request]:
        """`first` and whatever else is queued, up to `room`, waiting at most `wait` seconds."""
        batch = [first] if first is not None else []
        deadline = time.monotonic() + wait
        while len(batch) < room:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # let the loop see the shutdown after this batch
                break
            batch.append(item)
        return [r for r in batch if not r.cancelled]

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = self._take(first, self.max_batch, self.gather)
            if not batch:
                continue
            running: list[Decoding] = []
            try:
                self._decode(batch, running)
            except Exception as err:  # one bad batch must not take the engine down
                log.exception("decoding a batch of %d failed", len(running))
                for seq in running:
                    if not seq.done:
                        with contextlib.suppress(Exception):
                            seq.request.emit(err)

    def _decode(self, batch: list[Request], rows: list[Decoding]) -> None:
        """Decode until every request is done, admitting queued requests between steps
        (continuous batching): row i of the KV cache belongs to rows[i]."""
        import torch

        pending = batch
        past: Any = None
        mask = positions = chosen = torch.empty(0)
        with torch.inference_mode():
            while True:
                if pending:
                    new = [self._sequence(r) for r in pending]
                    self.stats.requests += len(new)
                    logits, new_past, new_mask, new_positions = self._prefill(new)
                    new_chosen = self._pick(logits, new)
                    if rows:
                        past, mask = merge(past, mask, new_past, new_mask)
                        positions = torch.cat([positions, new_positions])
                        chosen = torch.cat([chosen, new_chosen])
                    else:
                        past, mask, positions, chosen = (
                            new_past,
                            new_mask,
                            new_positions,
                            new_chosen,
                        )
                    rows.extend(new)
                    pending = []
                else:
                    mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=torch.long)], dim=1)
                    positions = positions + 1
                    out = self.model(
                        input_ids=chosen[:, None],
                        attention_mask=mask,
                        position_ids=positions,
                        use_cache=True,
                        logits_to_keep=1,
                        **{self.cache_kwarg: past},
                    )
                    past = cache_of(out)
                    chosen = self._pick(out.logits[:, -1, :], rows)
                keep = [i for i, seq in enumerate(rows) if not seq.done]
                if len(keep) < len(rows):
                    # Finished rows leave at once so the rest decode at their own width.
                    index = torch.tensor(keep, dtype=torch.long)
                    past.batch_select_indices(index)
                    mask, positions, chosen = mask[index], positions[index], chosen[index]
                    rows[:] = [rows[i] for i in keep]
                    if not rows:
                        return
                    past, mask = trim_padding(past, mask)
                if len(rows) < self.max_batch and plain(past):
                    pending = self._take(None, self.max_batch - len(rows), 0.0)

    def _sequence(self, request: Request) -> Decoding:
        room = self.context - len(request.prompt_ids)
        seq = Decoding(request, self.tokenizer, self.eos_ids, room)
        if request.grammar is not None:
            seq.matcher = matcher(request.grammar)
        if request.params.seed is not None:
            import torch

            seq.generator = torch.Generator().manual_seed(request.params.seed)
        return seq

    def _prefill(self, seqs: list[Decoding]) -> tuple[Any, Any, Any, Any]:
        """Run the prompts through the model: (last logits, cache, mask, last positions). The
        opening they share comes from the prefix cache; what follows it is left-padded, so a
        row's padding sits between its opening and the rest (masked, and positions skip it)."""
        import torch

        prompts = [s.request.prompt_ids for s in seqs]
        skipped, opening = self.prefixes.lookup(prompts) if self.prefixes else (0, None)
        rests = [p[skipped:] for p in prompts]
        width = max(len(r) for r in rests)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, rest in enumerate(rests):
            input_ids[i, width - len(rest) :] = torch.tensor(rest)
            mask[i, width - len(rest) :] = 1
        positions = skipped + (mask.cumsum(-1) - 1).clamp(min=0)
        if opening is not None:
            mask = torch.cat([torch.ones((len(seqs), skipped), dtype=torch.long), mask], dim=1)
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_kwarg: repeat_rows(opening, len(seqs)) if opening is not None else None},
        )
        return out.logits[:, -1, :], cache_of(out), mask, positions[:, -1:]

    def _pick(self, logits: Any, seqs: list[Decoding]) -> Any:
        """Choose each row's next token, record its logprob (and the top ones) on its sequence.

        A constrained row chooses among the tokens its grammar allows (so it can end only where
        the grammar accepts), but its logprobs are the model's own, unmasked: the confidence then
        still says how much the model wanted what it was made to say."""
        import torch

        self.stats.step(len(seqs))
        logits = logits.float()
        chosen = self._choose(mask_rows(logits, [seq.matcher for seq in seqs]), seqs)
        logprobs = torch.log_softmax(logits, dim=-1)
        picked = logprobs.gather(1, chosen[:, None])[:, 0].tolist()
        k = max(seq.request.params.top_logprobs for seq in seqs)
        top_ids: list[list[int]] = []
        top_lps: list[list[float]] = []
        if k:
            top = logprobs.topk(k, dim=-1)
            top_ids, top_lps = top.indices.tolist(), top.values.tolist()
        for row, (seq, token) in enumerate(zip(seqs, chosen.tolist(), strict=True)):
            if seq.request.cancelled:
                seq.done = True
                continue
            if seq.matcher is not None:
                advance(seq.matcher, token)
            want = seq.request.params.top_logprobs
            pairs = list(zip(top_ids[row][:want], top_lps[row][:want], strict=True)) if want else []
            seq.add(token, picked[row], pairs)
        return chosen

    @staticmethod
    def _choose(logits: Any, seqs: list[Decoding]) -> Any:
        """Greedy rows take the argmax; sampled rows draw with temperature and top-p."""
        import torch

        chosen = logits.argmax(dim=-1)
        for row, seq in enumerate(seqs):
            params = seq.request.params
            if params.temperature <= 0:
                continue
            probs = torch.softmax(logits[row] / params.temperature, dim=-1)
            if params.top_p < 1.0:
                ordered, order = probs.sort(descending=True)
                # keep the smallest prefix whose mass reaches top_p (always the first token)
                cut = (ordered.cumsum(0) - ordered) >= params.top_p
                ordered[cut] = 0.0
                probs = torch.zeros_like(probs).scatter(0, order, ordered)
            chosen[row] = torch.multinomial(probs, 1, generator=seq.generator)[0]
        return chosen


def load_model(
    spec: str,
    *,
    adapter: str | Path | None = None,
    threads: int | None = None,
    dtype: str = "float32",
) -> tuple[Any, Any]:
    """(model, tokenizer) for `spec` on the CPU, a LoRA adapter applied when given, in `dtype`
    (float32, bfloat16, or auto: see `pick_dtype`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    directory = local_directory(resolve(spec))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model: Any = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    if adapter is not None:
        from .adapters import load_adapter

        model = load_adapter(model, adapter)
    precision = pick_dtype(dtype)
    if precision != "float32":
        model = model.to(getattr(torch, precision))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def pick_dtype(wanted: str) -> str:
    """`wanted`, with auto resolved: bfloat16 where this CPU multiplies it natively (AVX512-BF16
    or AMX: about twice float32's speed, half its memory traffic), else float32 (emulated
    bfloat16 is slower than float32)."""
    if wanted != "auto":
        return wanted
    import torch

    try:
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except AttributeError:  # a torch without these probes: do not guess
        native = False
    return "bfloat16" if native else "float32"

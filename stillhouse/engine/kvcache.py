"""Key/value caches the engine and the trainer work with: joining, trimming and repeating their
rows, and the engine's cache of prompt openings.

Requests to one task open the same way (its system prompt, its few-shot examples), often for most
of their tokens. `PrefixCache` keeps the keys and values of openings it has run, one row each, so
a later batch runs only what follows them. Reusing them must never change an answer beyond
floating-point noise: tests/test_local_engine.py compares answers with and without it.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

Rows = list[tuple[Any, Any]]  # per layer: (keys, values), shape [rows, heads, tokens, dim]


def forward_takes(model: Any, name: str) -> bool:
    """Whether the model's forward (the base model's, under a peft wrapper) takes `name`."""
    forward = model.get_base_model().forward if hasattr(model, "get_base_model") else model.forward
    return name in inspect.signature(forward).parameters


def cache_kwarg(model: Any) -> str:
    """The name the model's forward takes its cache by: `cache` in transformers 5.2x, which
    deprecates `past_key_values` (the name older releases know)."""
    return "cache" if forward_takes(model, "cache") else "past_key_values"


def cache_of(out: Any) -> Any:
    """The cache a forward call returned, under either name."""
    found = out.get("cache")
    return found if found is not None else out.get("past_key_values")


def plain(past: Any) -> bool:
    """Whether `past` is a cache of plain growing layers, whose rows can be padded, joined and
    repeated (sliding-window and other layer kinds cannot)."""
    from transformers.cache_utils import DynamicLayer

    layers: list[Any] = getattr(past, "layers", None) or []
    return bool(layers) and all(
        type(layer) is DynamicLayer and layer.is_initialized for layer in layers
    )


def repeat_rows(past: Any | Rows, rows: int) -> Any:
    """A new cache with `rows` copies of a one-row cache (`past` or its per-layer tensors);
    gradients flow back to the one row."""
    from transformers.cache_utils import DynamicCache

    layers = past if isinstance(past, list) else [(x.keys, x.values) for x in past.layers]
    return DynamicCache(
        ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in layers]
    )


def merge(past: Any, mask: Any, other: Any, other_mask: Any) -> tuple[Any, Any]:
    """Join `other`'s rows under `past`'s, left-padding the shorter one (padding is masked)."""
    import torch
    import torch.nn.functional as F

    width = max(mask.shape[1], other_mask.shape[1])
    for mine, theirs in zip(past.layers, other.layers, strict=True):
        for name in ("keys", "values"):
            a, b = getattr(mine, name), getattr(theirs, name)
            a = F.pad(a, (0, 0, width - a.shape[-2], 0))
            b = F.pad(b, (0, 0, width - b.shape[-2], 0))
            setattr(mine, name, torch.cat([a, b]))
    mask = torch.cat(
        [
            F.pad(mask, (width - mask.shape[1], 0)),
            F.pad(other_mask, (width - other_mask.shape[1], 0)),
        ]
    )
    return past, mask


def trim_padding(past: Any, mask: Any) -> tuple[Any, Any]:
    """Drop leading cache columns that no remaining row attends to."""
    used = mask.any(dim=0).nonzero()
    start = int(used[0]) if len(used) else 0
    if start == 0 or not plain(past):
        return past, mask
    for layer in past.layers:
        layer.keys = layer.keys[..., start:, :]
        layer.values = layer.values[..., start:, :]
    return past, mask[:, start:]


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class PrefixCache:
    """The keys and values of prompt openings already run (least recently used dropped first,
    past `max_tokens` in all). `lookup` answers how much of a batch's shared opening can be
    skipped, running and keeping the opening when it is new."""

    def __init__(self, model: Any, *, min_length: int = 16, max_tokens: int = 8192) -> None:
        self.model = model
        self.cache_kwarg = cache_kwarg(model)
        self.min_length = min_length
        self.max_tokens = max_tokens
        self.entries: OrderedDict[tuple[int, ...], Rows] = OrderedDict()
        self.enabled = True
        self.hits = 0  # prompt tokens not run again, for /healthz and the benchmark

    def lookup(self, prompts: Sequence[Sequence[int]]) -> tuple[int, Rows | None]:
        """(tokens skipped, one-row keys/values of them) for a batch of prompts; (0, None) when
        they share too little. Every prompt keeps at least its last token to run, for its
        logits."""
        if not self.enabled:
            return 0, None
        limit = min(len(p) for p in prompts) - 1
        head = list(prompts[0][:limit])
        for other in prompts[1:]:
            head = head[: common_length(head, other)]
        if len(head) < self.min_length:
            return 0, None
        best: tuple[int, ...] = max(
            self.entries, key=lambda key: common_length(key, head), default=()
        )
        known = common_length(best, head)  # () when nothing is kept: 0
        if known < self.min_length:
            known = 0
        elif len(head) - known < self.min_length:  # the rest is not worth keeping apart
            self.entries.move_to_end(best)
            self.hits += known * len(prompts)
            return known, _cut(self.entries[best], known)
        rows = self._run(head, _cut(self.entries[best], known) if known else None)
        if rows is None:
            return 0, None
        self._keep(tuple(head), rows)
        self.hits += len(head) * len(prompts) - (len(head) - known)
        return len(head), rows

    def _run(self, head: list[int], known: Rows | None) -> Rows | None:
        """Run `head` (after its first `known` tokens, whose keys/values are given) for one row."""
        import torch

        start = known[0][0].shape[-2] if known else 0
        past = repeat_rows(known, 1) if known else None
        out = self.model(
            input_ids=torch.tensor([head[start:]], dtype=torch.long),
            attention_mask=torch.ones((1, len(head)), dtype=torch.long),
            position_ids=torch.arange(start, len(head))[None, :],
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_kwarg: past},
        )
        cache = cache_of(out)
        if not plain(cache):
            self.enabled = False  # this model's cache cannot be shared: stop trying
            return None
        return [(x.keys, x.values) for x in cache.layers]

    def _keep(self, key: tuple[int, ...], rows: Rows) -> None:
        self.entries[key] = rows
        self.entries.move_to_end(key)
        # an entry that another one starts with adds nothing
        for other in [k for k in self.entries if k != key and key[: len(k)] == k]:
            del self.entries[other]
        while sum(len(k) for k in self.entries) > self.max_tokens and len(self.entries) > 1:
            self.entries.popitem(last=False)


def _cut(rows: Rows, length: int) -> Rows:
    return [(k[..., :length, :], v[..., :length, :]) for k, v in rows]

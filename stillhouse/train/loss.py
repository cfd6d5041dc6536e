"""The training loss, computed with less work than `model(**batch).loss` and equal to it.

A task's examples share a long opening (the app's system prompt, often most of each example),
and the loss only falls on the answers. So the batch's common prefix runs through the model
once, for one row, and its keys and values are shared by every row (gradients flow back through
them: the result is exact, not an approximation); and the vocabulary projection, the largest
matrix of a small model, runs only at positions that predict a labelled token. In float32 it
must never change the loss's value: tests/test_train.py compares it with the model's own.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100  # label of a token the loss skips
MIN_PREFIX = 8  # shorter shared openings are not worth a second forward call


def batch_loss(
    model: Any, batch: dict[str, Any], *, share_prefix: bool = True, cpu_bf16: bool = False
) -> Any:
    """Mean cross-entropy over the labelled tokens of a right-padded batch (`input_ids`,
    `attention_mask`, `labels` as from `data.collate`), as the model's own loss computes it.
    `share_prefix=False` when the model cannot return a cache (gradient checkpointing);
    `cpu_bf16`: compute in bfloat16 autocast on the CPU (train.precision = "bfloat16": ~17%
    faster a step where the CPU has native bfloat16, and no longer exactly the float32 loss)."""
    import torch

    from ..engine.kvcache import forward_takes

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16):
        if not forward_takes(model, "logits_to_keep"):  # transformers' causal LMs all do
            return model(**batch).loss
        return _loss(model, batch, share_prefix)


def _loss(model: Any, batch: dict[str, Any], share_prefix: bool) -> Any:
    import torch
    import torch.nn.functional as F

    from ..engine.kvcache import cache_kwarg

    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    rows, width = ids.shape
    # target[:, t] is the token position t predicts
    target = torch.full_like(labels, IGNORE)
    target[:, :-1] = labels[:, 1:]
    start, past = 0, None
    if share_prefix and rows > 1:
        start, past = _shared_prefix(model, ids, mask, target)
    keep = (target[:, start:] != IGNORE).any(0).nonzero()[:, 0]
    positions = torch.arange(start, width, device=ids.device).expand(rows, -1)
    out = model(
        input_ids=ids[:, start:],
        attention_mask=mask,
        position_ids=positions,
        use_cache=past is not None,
        logits_to_keep=keep,
        **({cache_kwarg(model): past} if past is not None else {}),
    )
    logits = out.logits
    wanted = target[:, start:][:, keep]
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), wanted.reshape(-1), ignore_index=IGNORE
    )


def _shared_prefix(model: Any, ids: Any, mask: Any, target: Any) -> tuple[int, Any]:
    """(length, cache for every row) of the opening all rows share, run once; (0, None) when
    there is none worth sharing. It stops before the first position that predicts a label, so
    no logits are ever needed from it."""
    from ..engine.kvcache import cache_of, plain, repeat_rows

    same = ((ids == ids[:1]).all(0) & (mask == 1).all(0)).long().cumprod(0)
    length = int(same.sum())
    labelled = (target != IGNORE).any(0).nonzero()
    if len(labelled):
        length = min(length, int(labelled[0]))
    if length < MIN_PREFIX:
        return 0, None
    out = model(
        input_ids=ids[:1, :length],
        attention_mask=mask[:1, :length],
        use_cache=True,
        logits_to_keep=1,
    )
    past = cache_of(out)
    if past is None or not plain(past):
        return 0, None
    return length, repeat_rows(past, ids.shape[0])

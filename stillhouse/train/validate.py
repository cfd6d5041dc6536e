"""The validation split a training run judges itself on, and agreement on it: the adapter is
judged by what the gate will judge it by (the student's greedy answer agreeing with the
teacher's under the task's metric), not only by its loss.

The split is a share of the *train* split, by request: the gate's holdout never steers training
(choosing the epoch on it would make the gate's verdict partly a fit to it).

A `Scorer` renders each example's request exactly as training and serving do, generates greedy
answers in batches with the model being trained, and returns the share that agree with the
teacher's last answer (`answers.agreements`). Torch and transformers are imported by the caller
(train/lora.py); this module only drives the model it is handed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..answers import Metric, agreements
from ..toolcalls import assistant_text, chat_messages

# Longest answer generated while validating, in tokens, when the teacher's are longer.
MAX_NEW_TOKENS = 256
# Below this many train examples none is set aside: too few to judge on, all needed to learn.
MIN_TO_SPLIT = 20


def _last_answer(messages: Sequence[dict[str, Any]]) -> int:
    return max(i for i, m in enumerate(messages) if m.get("role") == "assistant")


def prompt_messages(example: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages before the example's last assistant turn: what the student is asked."""
    messages = list(example["messages"])
    return messages[: _last_answer(messages)]


def teacher_answer(example: dict[str, Any]) -> str:
    """The example's last assistant turn as the model says it (calls as `<tool_call>` blocks)."""
    messages = example["messages"]
    return assistant_text(messages[_last_answer(messages)])


def split(
    examples: Sequence[dict[str, Any]], share: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, validation): about `share` of the examples set aside, whole requests at a time
    (examples asking the very same thing stay on one side), picked by a seeded hash of the
    request, so the same examples and seed give the same split in any order. No validation
    when `share` is 0 or there are fewer than MIN_TO_SPLIT examples."""
    if share <= 0 or len(examples) < MIN_TO_SPLIT:
        return list(examples), []
    groups: dict[str, list[int]] = {}
    for i, example in enumerate(examples):
        key = json.dumps(prompt_messages(example), sort_keys=True, ensure_ascii=False)
        groups.setdefault(key, []).append(i)
    ranked = sorted(
        groups.items(),
        key=lambda kv: hashlib.blake2b(f"{seed}:{kv[0]}".encode(), digest_size=8).digest(),
    )
    goal = max(1, round(share * len(examples)))
    chosen: set[int] = set()
    for _, rows in ranked:
        if len(chosen) >= goal:
            break
        chosen.update(rows)
    train = [x for i, x in enumerate(examples) if i not in chosen]
    if not train:  # one request makes up the whole split: nothing to learn from would be left
        return list(examples), []
    return train, [examples[i] for i in sorted(chosen)]


@dataclass(slots=True)
class Scorer:
    """Greedy agreement of a model with the teacher on `examples` (a validation split).
    `history` keeps each call's agreement and the answers behind it, for reports."""

    examples: Sequence[dict[str, Any]]
    metric: Metric
    batch_size: int = 16
    max_new_tokens: int | None = None  # None: the longest teacher answer, plus a margin
    history: list[float] = field(default_factory=list)
    last_answers: list[str] = field(default_factory=list)

    def __call__(self, model: Any, tokenizer: Any) -> float:
        answers = generate(
            model, tokenizer, self.examples, self.batch_size, self._budget(tokenizer)
        )
        teachers = [teacher_answer(x) for x in self.examples]
        verdicts, _ = agreements(self.metric, teachers, answers)
        score = sum(verdicts) / max(len(verdicts), 1)
        self.history.append(score)
        self.last_answers = answers
        return score

    def _budget(self, tokenizer: Any) -> int:
        """`max_new_tokens`, set from the teacher's longest answer the first time it is needed."""
        if self.max_new_tokens is None:
            longest = max(
                len(tokenizer(teacher_answer(x), add_special_tokens=False)["input_ids"])
                for x in self.examples
            )
            self.max_new_tokens = min(MAX_NEW_TOKENS, longest + 8)
        return self.max_new_tokens


def generate(
    model: Any,
    tokenizer: Any,
    examples: Sequence[dict[str, Any]],
    batch_size: int,
    max_new_tokens: int,
) -> list[str]:
    """Each example's greedy answer to its request, rendered as training renders it (left-padded
    batches; dropout off while generating, the model's mode restored after)."""
    import torch

    device = next(model.parameters()).device
    texts = [
        str(
            tokenizer.apply_chat_template(
                chat_messages(prompt_messages(x), x.get("tools")),
                tokenize=False,
                add_generation_prompt=True,
            )
        )
        for x in examples
    ]
    was_training = model.training
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    model.eval()
    out: list[str] = []
    try:
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(
                    texts[start : start + batch_size],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=False,
                ).to(device)
                generated = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    use_cache=True,
                )
                width = batch["input_ids"].shape[1]
                out.extend(
                    tokenizer.decode(row[width:], skip_special_tokens=True).strip()
                    for row in generated
                )
    finally:
        tokenizer.padding_side = side
        if was_training:
            model.train()
    return out

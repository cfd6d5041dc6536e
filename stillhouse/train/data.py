"""The training data as the loop sees it: a chat example rendered by the base model's chat
template and tokenised, labels on the assistant's answer only (IGNORE elsewhere), an epoch's
order, right-padded batches. Torch is imported only where tensors are made."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import StillhouseError
from ..toolcalls import chat_messages
from .loss import IGNORE


class TrainingError(StillhouseError):
    """Training could not run (no usable examples, an unsupported chat template...)."""


@dataclass(frozen=True, slots=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE except on assistant tokens

    @property
    def trained_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


def _render(tokenizer: Any, messages: Sequence[dict[str, Any]], tools: Any, prompt: bool) -> str:
    """The chat template over the messages with their tools and tool calls written out as the
    engines write them when serving (toolcalls.chat_messages): one rendering for both."""
    return str(
        tokenizer.apply_chat_template(
            chat_messages(messages, tools), tokenize=False, add_generation_prompt=prompt
        )
    )


def encode(
    tokenizer: Any, example: dict[str, Any], max_length: int, turns: str = "last"
) -> Encoded | None:
    """One chat example -> token ids with labels on its last assistant turn (`turns="all"`: on
    every assistant turn), the end-of-turn token included, so the student learns to stop. None
    when nothing trainable is left.

    "last" is distillation's default: a captured call's earlier assistant turns are the
    request's context (the app's canned replies, an agent, an earlier model), and only the
    last one is the teacher's answer; each earlier answer of the teacher is its own call.

    The conversation is rendered once and each assistant turn located by rendering its prefix:
    a chat template renders a prefix of a conversation as a prefix of its text.
    """
    if turns not in ("last", "all"):
        raise TrainingError(f"train.turns must be 'last' or 'all', not {turns!r}")
    messages = example["messages"]
    tools = example.get("tools")
    full = _render(tokenizer, messages, tools, prompt=False)
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = _render(tokenizer, messages[:i], tools, prompt=True) if i else ""
        through = _render(tokenizer, messages[: i + 1], tools, prompt=False)
        if not full.startswith(before) or not full.startswith(through):
            raise TrainingError("the chat template does not render conversations prefix-wise")
        spans.append((len(before), len(through)))
    if turns == "last":
        spans = spans[-1:]
    encoding = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoding["input_ids"])[:max_length]
    offsets = encoding["offset_mapping"][: len(ids)]
    labels = [
        token if any(a <= start < b for a, b in spans) else IGNORE
        for token, (start, _end) in zip(ids, offsets, strict=True)
    ]
    if all(label == IGNORE for label in labels):
        return None
    return Encoded(ids, labels)


def encode_all(
    tokenizer: Any, examples: Sequence[dict[str, Any]], max_length: int, turns: str = "last"
) -> list[Encoded]:
    encoded = (encode(tokenizer, x, max_length, turns) for x in examples)
    return [e for e in encoded if e is not None]


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The example order of one epoch: a permutation that depends only on (seed, epoch), so a
    resumed run sees exactly the batches the interrupted one would have."""
    import torch

    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return [int(i) for i in torch.randperm(n, generator=generator)]


def collate(items: Sequence[Encoded], pad_id: int, device: Any) -> dict[str, Any]:
    """Right-padded tensors; padding is masked out of attention and loss."""
    import torch

    width = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, e in enumerate(items):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
    }


def batches(items: Sequence[Encoded], size: int) -> Iterator[Sequence[Encoded]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

"""Immutable, content-hashed dataset snapshots: build, store, read back, verify and export.

A snapshot's id is derived from the sha256 of its lines (example, split, intent, source call), so
the same curated data always has the same id and different data never shares one. Nothing here
updates or deletes a stored snapshot.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from ..errors import StillhouseError
from ..store.base import TraceStore
from ..store.records import Dataset, DatasetExample

SPLITS = ("train", "holdout", "all")


def _line(e: DatasetExample) -> bytes:
    return orjson.dumps(
        {"call_id": e.call_id, "example": e.example, "intent": e.intent, "split": e.split},
        option=orjson.OPT_SORT_KEYS,
    )


def content_hash(task: str, examples: Sequence[DatasetExample]) -> str:
    digest = hashlib.sha256(f"stillhouse-dataset-v1\n{task}\n".encode())
    for e in examples:
        digest.update(_line(e))
        digest.update(b"\n")
    return digest.hexdigest()


def dataset_id(digest: str) -> str:
    return f"ds_{digest[:16]}"


def build(
    task: str,
    examples: Sequence[DatasetExample],
    *,
    source_count: int,
    removed: dict[str, int],
    config: dict[str, Any],
    created_at: float | None = None,
) -> Dataset:
    digest = content_hash(task, examples)
    return Dataset(
        id=dataset_id(digest),
        task=task,
        content_hash=digest,
        created_at=time.time() if created_at is None else created_at,
        train_count=sum(e.split == "train" for e in examples),
        holdout_count=sum(e.split == "holdout" for e in examples),
        intents_count=len({e.intent for e in examples}),
        source_count=source_count,
        removed=removed,
        config=config,
    )


def save(
    store: TraceStore, dataset: Dataset, examples: Sequence[DatasetExample]
) -> tuple[Dataset, bool]:
    """Store the snapshot: (the stored dataset, whether it is new). When identical data was
    curated before, the snapshot already stored is returned untouched."""
    if store.insert_dataset(dataset, examples):
        return dataset, True
    existing = store.get_dataset(dataset.id)
    assert existing is not None
    return existing, False


def load(store: TraceStore, ref: str) -> Dataset:
    """A dataset by id (or a unique prefix of its content hash)."""
    found = store.get_dataset(ref)
    if found is None:
        matches = [d for d in store.list_datasets() if d.content_hash.startswith(ref)]
        if len(matches) != 1:
            raise StillhouseError(f"no dataset {ref!r} (see `stillhouse datasets`)")
        found = matches[0]
    return found


def verify(store: TraceStore, dataset: Dataset) -> None:
    """Raise when the stored lines no longer hash to the snapshot's content hash."""
    if content_hash(dataset.task, store.dataset_examples(dataset.id)) != dataset.content_hash:
        raise StillhouseError(f"dataset {dataset.id} does not match its content hash")


def answer_only(example: dict[str, Any]) -> dict[str, Any]:
    """The example with `"weight": 0` on every assistant turn but the last (OpenAI's chat
    fine-tuning format): the provider trains on the call's answer only, as the local trainer's
    train.turns = "last" does."""
    messages = example["messages"]
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
    weighted = [
        {**m, "weight": 0} if m.get("role") == "assistant" and i != last else m
        for i, m in enumerate(messages)
    ]
    return {**example, "messages": weighted}


def export(
    store: TraceStore,
    ref: str,
    out: str | os.PathLike[str],
    split: str = "train",
    *,
    last_turn_only: bool = False,
) -> tuple[Dataset, int]:
    """Write a split as OpenAI chat fine-tuning JSONL; returns (dataset, lines written).
    `last_turn_only`: earlier assistant turns get weight 0 (see answer_only)."""
    if split not in SPLITS:
        raise StillhouseError(f"split must be one of {', '.join(SPLITS)}")
    dataset = load(store, ref)
    verify(store, dataset)
    rows = store.dataset_examples(dataset.id, None if split == "all" else split)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        for row in rows:
            example = answer_only(row.example) if last_turn_only else row.example
            f.write(orjson.dumps(example) + b"\n")
    tmp.replace(path)  # a reader never sees half a file
    return dataset, len(rows)

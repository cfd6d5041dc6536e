"""Immutable, content-hashed dataset snapshots: build, store, read back, verify and export.

A snapshot's id is derived from the sha256 of its lines (example, split, intent, source call), so
the same curated data always has the same id and different data never shares one. Nothing here
updates or deletes a stored snapshot.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
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


def examples_hash(examples: Sequence[DatasetExample]) -> str:
    """The examples as training and evaluation see them (each line without the call it came
    from, in any order): equal when the same messages were captured again under new call ids."""
    lines = sorted(
        orjson.dumps(
            {"example": e.example, "intent": e.intent, "split": e.split},
            option=orjson.OPT_SORT_KEYS,
        )
        for e in examples
    )
    return hashlib.sha256(b"\n".join(lines)).hexdigest()


def save(
    store: TraceStore, dataset: Dataset, examples: Sequence[DatasetExample]
) -> tuple[Dataset, bool]:
    """Store the snapshot: (the stored dataset, whether it is new). When identical data was
    curated before, the snapshot already stored is returned untouched; so is the task's newest
    snapshot when these examples only retell it (the same lines from newer calls), so that the
    same data never starts another training run."""
    newest = next(iter(store.list_datasets(dataset.task)), None)
    if (
        newest is not None
        and newest.id != dataset.id
        and examples_hash(store.dataset_examples(newest.id)) == examples_hash(examples)
    ):
        return newest, False
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
    force: bool = False,
) -> tuple[Dataset, int]:
    """Write a split as OpenAI chat fine-tuning JSONL; returns (dataset, lines written).
    `last_turn_only`: earlier assistant turns get weight 0 (see answer_only). `force`: write
    the file a symbolic link points to (see export_target)."""
    if split not in SPLITS:
        raise StillhouseError(f"split must be one of {', '.join(SPLITS)}")
    path = export_target(out, force=force)
    dataset = load(store, ref)
    verify(store, dataset)
    rows = store.dataset_examples(dataset.id, None if split == "all" else split)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A fresh temporary name (O_EXCL) in the same folder, renamed over the target: a reader
        # never sees half a file, and no planted `<out>.tmp` link can redirect the write.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                for row in rows:
                    example = answer_only(row.example) if last_turn_only else row.example
                    f.write(orjson.dumps(example) + b"\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise StillhouseError(f"cannot write {out}: {err.strerror or err}") from None
    return dataset, len(rows)


def export_target(out: str | os.PathLike[str], *, force: bool = False) -> Path:
    """The regular file an export may replace. The export renames a new file over its target,
    so pointed at `/dev/null` (as root) it turned the device into a file: anything that exists
    and is not a regular file is refused, and a symbolic link (`/dev/stdout` is one) is followed
    only with `force`, to a regular file or a new one."""
    if not os.fspath(out):
        raise StillhouseError("no file to write: --out is empty")
    path = Path(out)
    if path.is_symlink():
        if not force:
            raise StillhouseError(
                f"{out} is a symbolic link: use --force to write the file it points to"
            )
        path = path.resolve()
    if path.exists() and not path.is_file():
        raise StillhouseError(
            f"{out} exists and is not a regular file (a device, folder or pipe): "
            "name a new file or a regular one to replace"
        )
    return path

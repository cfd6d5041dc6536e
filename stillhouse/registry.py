"""The registry: datasets -> candidates -> eval runs -> releases, each an immutable row with an id,
a time, a config hash and its parents, so any student traces back to the data it learnt from.

Nothing here updates or deletes a row: a retrained student is a new candidate, a re-run
evaluation a new eval run. Reads and writes go through the trace store, on SQLite or PostgreSQL.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import StillhouseError
from .store.base import TraceStore
from .store.records import Candidate, EvalRun, Export, Release, new_id

_PREFIXES = {
    "ds_": "dataset",
    "cand_": "candidate",
    "eval_": "eval_run",
    "rel_": "release",
    "export_": "export",
}


def config_hash(data: dict[str, Any]) -> str:
    """sha256 of a JSON document with sorted keys: equal settings, equal hash."""
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class Link:
    """One record in a lineage: what it is, its id, when, its config hash and a summary."""

    kind: str
    id: str
    created_at: float
    config_hash: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "created_at": self.created_at,
            "config_hash": self.config_hash,
            **self.detail,
        }


def register_candidate(
    store: TraceStore,
    *,
    task: str,
    dataset_id: str,
    backend: str,
    base_model: str,
    config: dict[str, Any],
    artifacts: dict[str, Any],
    serving: dict[str, Any],
    metrics: dict[str, Any],
    parent_id: str | None = None,
) -> Candidate:
    """Store a new candidate; its dataset (and parent, when given) must exist."""
    if store.get_dataset(dataset_id) is None:
        raise StillhouseError(f"no dataset {dataset_id!r}: a candidate needs the data it learnt")
    if parent_id is not None and store.get_candidate(parent_id) is None:
        raise StillhouseError(f"no candidate {parent_id!r}")
    candidate = Candidate(
        id=new_id("cand"),
        task=task,
        dataset_id=dataset_id,
        backend=backend,
        base_model=base_model,
        config_hash=config_hash(config),
        created_at=time.time(),
        parent_id=parent_id,
        config=config,
        artifacts=artifacts,
        serving=serving,
        metrics=metrics,
    )
    store.insert_candidate(candidate)
    return candidate


def record_eval_run(
    store: TraceStore,
    candidate_id: str,
    *,
    dataset_id: str,
    config: dict[str, Any],
    metrics: dict[str, Any],
    passed: bool | None,
    run_id: str | None = None,
) -> EvalRun:
    """Store an eval run; `run_id` lets the caller name files after the run before storing it."""
    if store.get_candidate(candidate_id) is None:
        raise StillhouseError(f"no candidate {candidate_id!r}")
    run = EvalRun(
        id=run_id or new_id("eval"),
        candidate_id=candidate_id,
        dataset_id=dataset_id,
        config_hash=config_hash(config),
        metrics=metrics,
        passed=passed,
    )
    store.insert_eval_run(run)
    return run


def record_release(
    store: TraceStore,
    candidate_id: str,
    *,
    eval_run_id: str | None,
    config: dict[str, Any],
    state: str = "created",
) -> Release:
    if store.get_candidate(candidate_id) is None:
        raise StillhouseError(f"no candidate {candidate_id!r}")
    if eval_run_id is not None and store.get_eval_run(eval_run_id) is None:
        raise StillhouseError(f"no eval run {eval_run_id!r}")
    release = Release(
        id=new_id("rel"),
        candidate_id=candidate_id,
        eval_run_id=eval_run_id,
        config_hash=config_hash(config),
        state=state,
        config=config,
    )
    store.insert_release(release)
    return release


def record_export(
    store: TraceStore,
    candidate_id: str,
    *,
    fmt: str,
    path: str,
    config: dict[str, Any],
    files: dict[str, Any],
) -> Export:
    """A candidate written out for another engine: where, how, and each file's size and sha256."""
    if store.get_candidate(candidate_id) is None:
        raise StillhouseError(f"no candidate {candidate_id!r}")
    export = Export(
        id=new_id("export"),
        candidate_id=candidate_id,
        format=fmt,
        path=path,
        config_hash=config_hash(config),
        config=config,
        files=files,
    )
    store.insert_export(export)
    return export


def _export_link(e: Export) -> Link:
    detail = {"format": e.format, "path": e.path, **e.config, "files": sorted(e.files)}
    return Link("export", e.id, e.created_at, e.config_hash, detail)


def kind_of(record_id: str) -> str:
    for prefix, kind in _PREFIXES.items():
        if record_id.startswith(prefix):
            return kind
    known = ", ".join(f"{prefix}…" for prefix in _PREFIXES)
    raise StillhouseError(f"{record_id!r} is not a registry id ({known})")


def _dataset_link(store: TraceStore, dataset_id: str) -> Link:
    d = store.get_dataset(dataset_id)
    if d is None:
        raise StillhouseError(f"no dataset {dataset_id!r}")
    detail = {"task": d.task, "content_hash": d.content_hash, "train": d.train_count}
    return Link("dataset", d.id, d.created_at, config_hash(d.config), detail)


def _candidate_link(c: Candidate) -> Link:
    detail = {
        "task": c.task,
        "backend": c.backend,
        "base_model": c.base_model,
        "parent": c.parent_id,
        "train_loss": c.metrics.get("train_loss"),
    }
    return Link("candidate", c.id, c.created_at, c.config_hash, detail)


def _candidate_chain(store: TraceStore, candidate_id: str) -> list[Link]:
    """dataset -> (parent candidates, oldest first, each after its own dataset) -> candidate."""
    chain: list[Link] = []
    seen: set[str] = set()
    current: str | None = candidate_id
    while current is not None and current not in seen:
        seen.add(current)
        c = store.get_candidate(current)
        if c is None:
            raise StillhouseError(f"no candidate {current!r}")
        chain[:0] = [_dataset_link(store, c.dataset_id), _candidate_link(c)]
        current = c.parent_id
    return chain


def lineage(store: TraceStore, record_id: str) -> list[Link]:
    """The chain that leads to `record_id`, from its dataset down to it."""
    kind = kind_of(record_id)
    if kind == "dataset":
        return [_dataset_link(store, record_id)]
    if kind == "candidate":
        return _candidate_chain(store, record_id)
    if kind == "eval_run":
        run = store.get_eval_run(record_id)
        if run is None:
            raise StillhouseError(f"no eval run {record_id!r}")
        summary = {"passed": run.passed, "metrics": run.metrics}
        link = Link("eval_run", run.id, run.created_at, run.config_hash, summary)
        return [*_candidate_chain(store, run.candidate_id), link]
    if kind == "export":
        export = store.get_export(record_id)
        if export is None:
            raise StillhouseError(f"no export {record_id!r}")
        return [*_candidate_chain(store, export.candidate_id), _export_link(export)]
    release = store.get_release(record_id)
    if release is None:
        raise StillhouseError(f"no release {record_id!r}")
    head = (
        lineage(store, release.eval_run_id)
        if release.eval_run_id
        else _candidate_chain(store, release.candidate_id)
    )
    state = {"state": release.state}
    return [*head, Link("release", release.id, release.created_at, release.config_hash, state)]


def descendants(store: TraceStore, record_id: str) -> list[Link]:
    """What was made from `record_id` directly: a dataset's candidates, a candidate's eval runs,
    releases and retrained children."""
    kind = kind_of(record_id)
    if kind == "dataset":
        return [_candidate_link(c) for c in store.list_candidates(dataset_id=record_id)]
    if kind == "candidate":
        runs = [
            Link("eval_run", r.id, r.created_at, r.config_hash, {"passed": r.passed})
            for r in store.list_eval_runs(record_id)
        ]
        releases = [
            Link("release", r.id, r.created_at, r.config_hash, {"state": r.state})
            for r in store.list_releases(record_id)
        ]
        children = [_candidate_link(c) for c in store.list_candidates() if c.parent_id == record_id]
        exports = [_export_link(e) for e in store.list_exports(record_id)]
        return runs + releases + children + exports
    return []

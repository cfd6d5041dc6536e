"""The routing table from stored lifecycle state, kept fresh by a background thread.

Every gateway process runs a refresher: it reads each task's newest lifecycle event every
`lifecycle.refresh` seconds, off the request path, and publishes a new in-memory table. The
controller also publishes directly after each transition, so its own process sees a change at
once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from ..answers import DEFAULT_SIGNAL
from ..intents import IntentModel
from ..routing import RoutingTable, TaskRoute
from ..store import open_store
from ..store.base import TraceStore
from . import events
from .states import State, TaskState, intent_thresholds_of

log = logging.getLogger("stillhouse.lifecycle")


def entry_of(state: TaskState, store: TraceStore | None = None) -> TaskRoute:
    """The task's routing entry; with a store, the candidates' `serving` tables are looked up
    (candidates never change, so each is read once per process)."""
    incumbent = state.detail.get("incumbent") if state.state is State.ROLLOUT else None
    before = state.detail.get("incumbent_detail") or {}
    return TaskRoute(
        state=str(state.state),
        share=state.share,
        mode=state.mode,
        threshold=state.threshold,
        signal=state.signal,
        intent_thresholds=state.intent_thresholds,
        candidate=state.candidate_id,
        serving=serving_of(store, state.candidate_id),
        incumbent=incumbent,
        incumbent_serving=serving_of(store, incumbent),
        incumbent_threshold=before.get("threshold") if incumbent else None,
        incumbent_signal=str(before.get("signal") or DEFAULT_SIGNAL),
        incumbent_intent_thresholds=intent_thresholds_of(before) if incumbent else None,
    )


_SERVING: dict[str, dict[str, Any]] = {}


def serving_of(store: TraceStore | None, candidate: str | None) -> dict[str, Any] | None:
    if store is None or candidate is None:
        return None
    if candidate not in _SERVING:
        found = store.get_candidate(candidate)
        if found is None:
            return None
        _SERVING[candidate] = dict(found.serving or {})
    return _SERVING[candidate]


def entries(
    states: Mapping[str, TaskState], store: TraceStore | None = None
) -> dict[str, TaskRoute]:
    return {task: entry_of(state, store) for task, state in states.items()}


class RoutingRefresher:
    """Reload `table` from the store every `interval` seconds in a daemon thread."""

    def __init__(self, store_url: str, table: RoutingTable, interval: float) -> None:
        self.store_url = store_url
        self.table = table
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stillhouse-routing", daemon=True)

    def start(self) -> RoutingRefresher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        store = None  # one connection, held by this thread, reopened after a failure
        while not self._stop.is_set():
            try:
                store = store or open_store(self.store_url)
                self.table.publish(entries(events.current_all(store), store))
                self.table.publish_intents(newest_models(store))
            except Exception:  # the store is down: keep routing on the last table
                log.warning("routing table refresh failed", exc_info=True)
                if store is not None:
                    store.close()
                store = None
            self._stop.wait(self.interval)
        if store is not None:
            store.close()


_LOADED: dict[str, IntentModel | None] = {}  # dataset id -> its model; snapshots never change


def newest_models(store: TraceStore) -> dict[str, IntentModel]:
    """task -> the intent model of its newest curated snapshot (tasks without one are absent).
    For the routing table's refresh, off the request path; each snapshot is parsed once."""
    out = {}
    for task, dataset_id in store.newest_datasets():
        if dataset_id not in _LOADED:
            found = store.get_dataset(dataset_id)
            doc = (found.config or {}).get("intent_model") if found is not None else None
            _LOADED[dataset_id] = IntentModel.from_json(doc) if doc else None
        model = _LOADED[dataset_id]
        if model is not None:
            out[str(task)] = model
    return out

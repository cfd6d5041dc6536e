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

from ..curate.intent_model import newest_models
from ..routing import RoutingTable, TaskRoute
from ..store import open_store
from . import events
from .states import TaskState

log = logging.getLogger("stillhouse.lifecycle")


def entry_of(state: TaskState) -> TaskRoute:
    return TaskRoute(
        state=str(state.state),
        share=state.share,
        mode=state.mode,
        threshold=state.threshold,
        candidate=state.candidate_id,
    )


def entries(states: Mapping[str, TaskState]) -> dict[str, TaskRoute]:
    return {task: entry_of(state) for task, state in states.items()}


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
                self.table.publish(entries(events.current_all(store)))
                self.table.publish_intents(newest_models(store))
            except Exception:  # the store is down: keep routing on the last table
                log.warning("routing table refresh failed", exc_info=True)
                if store is not None:
                    store.close()
                store = None
            self._stop.wait(self.interval)
        if store is not None:
            store.close()

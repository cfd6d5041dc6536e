"""The lifecycle worker, assembled: the controller (a state machine over the store) with the real
steps of curation, prompt optimisation, training and evaluation. A composition root, like `cli/`
and the demo: the lifecycle itself imports none of these.
"""

from __future__ import annotations

import logging
from typing import Any

from .config import Config
from .lifecycle.controller import Controller
from .routing import RoutingTable
from .store.base import TraceStore
from .store.records import Verdict

log = logging.getLogger("stillhouse.lifecycle")


class DefaultSteps:
    """curate(), optimize_task(), train_task(), the evaluation gate, grace readiness, intent
    clustering and the review queue; `progress`: a training progress bar on stderr (the demo)."""

    def __init__(self, progress: bool = False) -> None:
        from .curate.readiness import GraceCounter

        self.progress = progress
        self.grace = GraceCounter()  # counts kept between ticks

    def curate(self, store: TraceStore, config: Config, task: str) -> str:
        from .curate.pipeline import curate

        return curate(store, config, task).dataset.id

    def optimize(self, store: TraceStore, config: Config, task: str, dataset_id: str) -> str:
        from .optimize import optimize_task

        return optimize_task(store, config, task, dataset=dataset_id)[0].id

    def train(
        self, store: TraceStore, config: Config, task: str, dataset_id: str, parent: str | None
    ) -> str:
        from .train.run import train_task

        candidate, _ = train_task(
            store, config, task, dataset=dataset_id, progress=self.progress, parent=parent
        )
        return candidate.id

    def validate(
        self, store: TraceStore, config: Config, task: str, candidate: str, incumbent: str | None
    ) -> Verdict:
        from .evaluate.run import validate

        return validate(store, config, task, candidate, incumbent=incumbent)

    def readiness(self, store: TraceStore, config: Config, now: float) -> dict[str, Any]:
        from .curate.readiness import grace_readiness

        return grace_readiness(store, config, now, self.grace)

    def new_examples(self, store: TraceStore, config: Config, task: str, since: float) -> int:
        return self.grace.new_distinct(store, task, since)

    def after_tick(self, store: TraceStore, config: Config) -> None:
        from .review import enqueue

        enqueue(store, config)

    def cluster(self, texts: list[str]) -> list[str]:
        from .curate.intents import cluster

        return cluster(texts, method="tfidf")


def controller(
    config: Config, routing: RoutingTable | None = None, *, progress: bool = False
) -> Controller:
    """The controller `stillhouse serve`, `stillhouse worker` and the demo run."""
    return Controller(config, steps=DefaultSteps(progress=progress), routing=routing)
